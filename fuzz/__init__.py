"""atheris fuzz harnesses for every parser of outside input; see fuzz/README.md."""

"""The simulator: simulated clocks, networks and servers driving the real proto code."""

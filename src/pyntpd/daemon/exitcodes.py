"""pyntpd's exit statuses: what the process tells its parent, the service manager and scripts.

    0    stopped as asked (SIGTERM), or -q set the clock
    1    failed: could not start (the reason is on stderr and in the log), or a fatal error
    2    bad command line
    150  panic: the sources' time is further from the clock than `tinker panic` (1000 s)

Panic has a status of its own so that a service manager can tell it from a crash and not
restart the daemon: with -g (the shipped default) the restarted daemon would let its first
update step the clock by any amount, so a majority of lying sources would get their step
after a pause (systemd: RestartPreventExitStatus=150). 150 is the first of the values the
LSB reserves for applications (150-199), outside what init scripts return (0-7), BSD's
sysexits (64-78) and systemd's own failures (200-243); as 128 + SIGTTOU, whose default
action stops a process rather than ending it, no signal death reads as 150 in a shell.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PANIC = 150

"""pyntpd: a hardened, memory-safe NTP daemon, a drop-in replacement for ntpd 4.2.8."""

__version__ = "0.1.0"

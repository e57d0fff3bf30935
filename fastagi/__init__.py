"""fastagi-panic: a discreet panic-alarm system for Asterisk and FreePBX, served over FastAGI."""

__version__ = "0.1.0"

"""Development tools for fastagi-panic, beside the runtime package and not in its wheel:
the sandbox Asterisk (a debootstrap chroot) and its SIPp phones, the embedded PostgreSQL
cluster, the demo site and story, and ``make run``'s dev environment.

Run from the repository root: ``python -m fastagi_dev --help``.
"""

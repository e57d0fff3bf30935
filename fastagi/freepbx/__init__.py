"""``fastagi freepbx install`` / ``uninstall``: the FreePBX-native install.

- ``conffile``: just enough of Asterisk's configuration syntax to read a FreePBX tree;
- ``blocks``: our lines in other people's files, between marker comments, removable to
  the byte;
- ``ami_user``: the AMI user, loopback only, least privilege (the table of every action
  and event with the class manager.c asks for);
- ``owned``: the files we write whole (dialplan copy, config.toml, systemd unit);
- ``plan``: from what the files say now, what they should say (pure);
- ``apply``: reading and writing the files, reloading Asterisk (the I/O).

Package data: ``fastagi-panic.conf`` (the repository's extensions_custom.conf, the same
bytes) and ``fastagi-panic.service`` (the unit's template).
"""

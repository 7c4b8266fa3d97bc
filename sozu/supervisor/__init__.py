"""The main process: command socket, worker table, audit log, upgrades."""

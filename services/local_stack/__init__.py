"""The local stack: everything ``zsad up`` starts on one machine, bound to 127.0.0.1.

:mod:`.service_processes` starts and stops the real server processes (Debian's redis-server, the bundled
Kafka-protocol broker) on free ports; :mod:`.stack_process` is the long-running process that owns them, starts
Ray and the Serve application on top, and records what it started so that ``zsad down`` stops exactly that.
"""

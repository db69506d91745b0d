"""``zsad gateway``: the first mile, from hot folders, video streams and GigE Vision cameras into Kafka.

A gateway is one source (:mod:`~services.gateway.folder_source`, ...) feeding one
:class:`~services.gateway.sender.FrameSender`, which puts frames on the frames topic with the record contract of
:mod:`services.records`, at least once and in order, through a bounded disk spool
(:mod:`~services.gateway.spool`) while the broker is unreachable.
"""

"""``streamguard run``: Kafka in, alerts out, state checkpointed per partition.

- :mod:`~streamguard.service.loop`: the run loop, :class:`~streamguard.service.loop.Service`
  (poll, rebalance marks, decode, micro-batch, process; the policy of the whole service
  is in its docstring);
- :mod:`~streamguard.service.assignment`: partitions assigned and revoked: restore,
  the shared warm-up, reading back the alerts already sent;
- :mod:`~streamguard.service.source_policy`: offsets that move backwards, a topic
  that changes shape;
- :mod:`~streamguard.service.rounds`: a checkpoint round: export, checkpoint, commit;
- :mod:`~streamguard.service.state`: the options and the per-partition records;
- :mod:`~streamguard.service.command`: the ``run`` command: flags, their
  ``STREAMGUARD_*`` variables, and the wiring of backend, metrics and Kafka clients.

The ``--alerts-file`` sink is :class:`streamguard.sinks.alert_file.AlertFile`.
``python -m streamguard.service run ...`` is ``streamguard run ...``.
"""

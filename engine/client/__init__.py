"""What users hold: the :class:`Engine` (tasks, enqueueing, connections), :class:`Job`
handles and a queue's dead letters. It sits above the broker, the history, the producer
and the worker, which it composes; nothing below imports it at run time.
"""

"""The ``zsad`` command line: :mod:`.main` builds the parser; each ``cmd_*`` module adds one group of commands.

Commands parse their arguments and call typed functions of the frame path, the prompt lifecycle and the local
stack; nothing below this package imports it.
"""

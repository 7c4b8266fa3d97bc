"""The one door to the generated protobuf bindings of `proto/command.proto`.

Every other module imports message classes from here (`from sozu.command.proto import Request`),
never from `command_pb2` directly, so a regeneration or a move touches one file.
"""

from sozu.command.proto.command_pb2 import *  # noqa: F403

"""The one door to the generated protobuf bindings of `proto/command.proto`.

Every other module imports message classes from here (`from sozu.command.proto import Request`),
never from `command_pb2` directly, so a regeneration or a move touches one file.
"""

# The confirmation a new main process sends the old one (a framed `bool`, as prost encodes it).
from google.protobuf.wrappers_pb2 import BoolValue

from sozu.command.proto.command_pb2 import *  # noqa: F403

__all__ = ["BoolValue"]  # with everything the star import brings

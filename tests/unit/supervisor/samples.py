"""Requests shared by the supervisor's unit tests."""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor

from sozu.command.proto import Request


def minimal_request(field: FieldDescriptor) -> Request:
    """A Request that sets the `request_type` variant `field` to a small placeholder value."""
    request = Request()
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(request, field.name).SetInParent()
    elif field.type == FieldDescriptor.TYPE_STRING:
        setattr(request, field.name, "x")
    elif field.type == FieldDescriptor.TYPE_ENUM:
        setattr(request, field.name, 0)
    else:
        setattr(request, field.name, 1)
    return request

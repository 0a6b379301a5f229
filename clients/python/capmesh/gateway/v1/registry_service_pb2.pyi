import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BackendState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKEND_STATE_UNSPECIFIED: _ClassVar[BackendState]
    BACKEND_STATE_UNKNOWN: _ClassVar[BackendState]
    BACKEND_STATE_AVAILABLE: _ClassVar[BackendState]
    BACKEND_STATE_UNAVAILABLE: _ClassVar[BackendState]
    BACKEND_STATE_ERROR: _ClassVar[BackendState]
BACKEND_STATE_UNSPECIFIED: BackendState
BACKEND_STATE_UNKNOWN: BackendState
BACKEND_STATE_AVAILABLE: BackendState
BACKEND_STATE_UNAVAILABLE: BackendState
BACKEND_STATE_ERROR: BackendState

class Backend(_message.Message):
    __slots__ = ("backend_id", "address", "capability", "services", "models", "loaded_models", "max_concurrency", "device", "device_group", "version", "labels", "max_queue")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BACKEND_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_GROUP_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    backend_id: str
    address: str
    capability: str
    services: _containers.RepeatedScalarFieldContainer[str]
    models: _containers.RepeatedScalarFieldContainer[str]
    loaded_models: _containers.RepeatedScalarFieldContainer[str]
    max_concurrency: int
    device: str
    device_group: str
    version: str
    labels: _containers.ScalarMap[str, str]
    max_queue: int
    def __init__(self, backend_id: _Optional[str] = ..., address: _Optional[str] = ..., capability: _Optional[str] = ..., services: _Optional[_Iterable[str]] = ..., models: _Optional[_Iterable[str]] = ..., loaded_models: _Optional[_Iterable[str]] = ..., max_concurrency: _Optional[int] = ..., device: _Optional[str] = ..., device_group: _Optional[str] = ..., version: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., max_queue: _Optional[int] = ...) -> None: ...

class BackendStatus(_message.Message):
    __slots__ = ("backend", "state", "last_success_time", "last_error", "last_error_time", "in_flight", "cooldown_remaining_seconds", "consecutive_failures", "source")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_TIME_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_REMAINING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    backend: Backend
    state: BackendState
    last_success_time: _timestamp_pb2.Timestamp
    last_error: str
    last_error_time: _timestamp_pb2.Timestamp
    in_flight: int
    cooldown_remaining_seconds: float
    consecutive_failures: int
    source: str
    def __init__(self, backend: _Optional[_Union[Backend, _Mapping]] = ..., state: _Optional[_Union[BackendState, str]] = ..., last_success_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_error: _Optional[str] = ..., last_error_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., in_flight: _Optional[int] = ..., cooldown_remaining_seconds: _Optional[float] = ..., consecutive_failures: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class CapabilityStatus(_message.Message):
    __slots__ = ("capability", "state", "backends", "services", "queued")
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    capability: str
    state: BackendState
    backends: _containers.RepeatedCompositeFieldContainer[BackendStatus]
    services: _containers.RepeatedScalarFieldContainer[str]
    queued: int
    def __init__(self, capability: _Optional[str] = ..., state: _Optional[_Union[BackendState, str]] = ..., backends: _Optional[_Iterable[_Union[BackendStatus, _Mapping]]] = ..., services: _Optional[_Iterable[str]] = ..., queued: _Optional[int] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("backend",)
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    backend: Backend
    def __init__(self, backend: _Optional[_Union[Backend, _Mapping]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("backend_id", "heartbeat_interval_seconds", "lease_seconds")
    BACKEND_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    backend_id: str
    heartbeat_interval_seconds: float
    lease_seconds: float
    def __init__(self, backend_id: _Optional[str] = ..., heartbeat_interval_seconds: _Optional[float] = ..., lease_seconds: _Optional[float] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("backend_id", "loaded_models", "in_flight")
    BACKEND_ID_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODELS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    backend_id: str
    loaded_models: _containers.RepeatedScalarFieldContainer[str]
    in_flight: int
    def __init__(self, backend_id: _Optional[str] = ..., loaded_models: _Optional[_Iterable[str]] = ..., in_flight: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("known", "heartbeat_interval_seconds")
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    known: bool
    heartbeat_interval_seconds: float
    def __init__(self, known: _Optional[bool] = ..., heartbeat_interval_seconds: _Optional[float] = ...) -> None: ...

class DeregisterRequest(_message.Message):
    __slots__ = ("backend_id",)
    BACKEND_ID_FIELD_NUMBER: _ClassVar[int]
    backend_id: str
    def __init__(self, backend_id: _Optional[str] = ...) -> None: ...

class DeregisterResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCapabilitiesResponse(_message.Message):
    __slots__ = ("capabilities",)
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    capabilities: _containers.RepeatedCompositeFieldContainer[CapabilityStatus]
    def __init__(self, capabilities: _Optional[_Iterable[_Union[CapabilityStatus, _Mapping]]] = ...) -> None: ...

class GetCapabilityRequest(_message.Message):
    __slots__ = ("capability",)
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    capability: str
    def __init__(self, capability: _Optional[str] = ...) -> None: ...

class GetCapabilityResponse(_message.Message):
    __slots__ = ("capability",)
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    capability: CapabilityStatus
    def __init__(self, capability: _Optional[_Union[CapabilityStatus, _Mapping]] = ...) -> None: ...

class WatchCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchCapabilitiesResponse(_message.Message):
    __slots__ = ("capabilities",)
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    capabilities: _containers.RepeatedCompositeFieldContainer[CapabilityStatus]
    def __init__(self, capabilities: _Optional[_Iterable[_Union[CapabilityStatus, _Mapping]]] = ...) -> None: ...

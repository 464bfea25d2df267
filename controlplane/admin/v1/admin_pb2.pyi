import datetime

from google.protobuf import any_pb2 as _any_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SyncStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYNC_STATUS_UNSPECIFIED: _ClassVar[SyncStatus]
    SYNCED: _ClassVar[SyncStatus]
    NOT_SENT: _ClassVar[SyncStatus]
    STALE: _ClassVar[SyncStatus]
    NACKED: _ClassVar[SyncStatus]
    PENDING: _ClassVar[SyncStatus]
SYNC_STATUS_UNSPECIFIED: SyncStatus
SYNCED: SyncStatus
NOT_SENT: SyncStatus
STALE: SyncStatus
NACKED: SyncStatus
PENDING: SyncStatus

class Nack(_message.Message):
    __slots__ = ("version", "nonce", "at", "message")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    version: str
    nonce: str
    at: _timestamp_pb2.Timestamp
    message: str
    def __init__(self, version: _Optional[str] = ..., nonce: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ...) -> None: ...

class TypeStatus(_message.Message):
    __slots__ = ("type_url", "type", "status", "sent_version", "sent_nonce", "sent_at", "acked_version", "acked_nonce", "acked_at", "nack", "subscribed")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SENT_NONCE_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    ACKED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACKED_NONCE_FIELD_NUMBER: _ClassVar[int]
    ACKED_AT_FIELD_NUMBER: _ClassVar[int]
    NACK_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    type: str
    status: SyncStatus
    sent_version: str
    sent_nonce: str
    sent_at: _timestamp_pb2.Timestamp
    acked_version: str
    acked_nonce: str
    acked_at: _timestamp_pb2.Timestamp
    nack: Nack
    subscribed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, type_url: _Optional[str] = ..., type: _Optional[str] = ..., status: _Optional[_Union[SyncStatus, str]] = ..., sent_version: _Optional[str] = ..., sent_nonce: _Optional[str] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., acked_version: _Optional[str] = ..., acked_nonce: _Optional[str] = ..., acked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., nack: _Optional[_Union[Nack, _Mapping]] = ..., subscribed: _Optional[_Iterable[str]] = ...) -> None: ...

class ProxyStatus(_message.Message):
    __slots__ = ("node_id", "cluster", "peer", "connected_at", "metadata", "build_version", "types", "stream_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_AT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    BUILD_VERSION_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    cluster: str
    peer: str
    connected_at: _timestamp_pb2.Timestamp
    metadata: _struct_pb2.Struct
    build_version: str
    types: _containers.RepeatedCompositeFieldContainer[TypeStatus]
    stream_id: int
    def __init__(self, node_id: _Optional[str] = ..., cluster: _Optional[str] = ..., peer: _Optional[str] = ..., connected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., build_version: _Optional[str] = ..., types: _Optional[_Iterable[_Union[TypeStatus, _Mapping]]] = ..., stream_id: _Optional[int] = ...) -> None: ...

class ListProxiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProxiesResponse(_message.Message):
    __slots__ = ("proxies", "rejected")
    PROXIES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    proxies: _containers.RepeatedCompositeFieldContainer[ProxyStatus]
    rejected: _containers.RepeatedCompositeFieldContainer[RejectedObject]
    def __init__(self, proxies: _Optional[_Iterable[_Union[ProxyStatus, _Mapping]]] = ..., rejected: _Optional[_Iterable[_Union[RejectedObject, _Mapping]]] = ...) -> None: ...

class RejectedObject(_message.Message):
    __slots__ = ("object", "by", "reason", "serving_last_good")
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SERVING_LAST_GOOD_FIELD_NUMBER: _ClassVar[int]
    object: str
    by: str
    reason: str
    serving_last_good: bool
    def __init__(self, object: _Optional[str] = ..., by: _Optional[str] = ..., reason: _Optional[str] = ..., serving_last_good: _Optional[bool] = ...) -> None: ...

class GetProxyRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class ProxyDetail(_message.Message):
    __slots__ = ("status", "acked_resources", "current_resources")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACKED_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    CURRENT_RESOURCES_FIELD_NUMBER: _ClassVar[int]
    status: ProxyStatus
    acked_resources: _containers.RepeatedCompositeFieldContainer[_any_pb2.Any]
    current_resources: _containers.RepeatedCompositeFieldContainer[_any_pb2.Any]
    def __init__(self, status: _Optional[_Union[ProxyStatus, _Mapping]] = ..., acked_resources: _Optional[_Iterable[_Union[_any_pb2.Any, _Mapping]]] = ..., current_resources: _Optional[_Iterable[_Union[_any_pb2.Any, _Mapping]]] = ...) -> None: ...

class WatchSyncRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class SyncEvent(_message.Message):
    __slots__ = ("event", "type_url", "proxy", "at")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    PROXY_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    event: str
    type_url: str
    proxy: ProxyStatus
    at: _timestamp_pb2.Timestamp
    def __init__(self, event: _Optional[str] = ..., type_url: _Optional[str] = ..., proxy: _Optional[_Union[ProxyStatus, _Mapping]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

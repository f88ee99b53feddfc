"""Read the weights of a Caffe ``.caffemodel`` without Caffe and without protobuf.

A ``.caffemodel`` is one ``caffe.NetParameter`` message in protobuf's binary wire format. This reader
knows the few fields the weights live in, numbered as in BVLC Caffe's ``src/caffe/proto/caffe.proto``,
and skips every other field, as the wire format allows::

    message NetParameter     { repeated LayerParameter layer = 100;     // since 2015
                               repeated V1LayerParameter layers = 2; }  // before, "DEPRECATED"
    message LayerParameter   { optional string name = 1;  repeated BlobProto blobs = 7; }
    message V1LayerParameter { optional string name = 4;  repeated BlobProto blobs = 6; }
    message BlobProto        { optional BlobShape shape = 7;
                               repeated float data = 5 [packed = true];
                               repeated double double_data = 8 [packed = true];
                               // the legacy 4-D shape, when `shape` is absent:
                               optional int32 num = 1, channels = 2, height = 3, width = 4; }
    message BlobShape        { repeated int64 dim = 1 [packed = true]; }

The wire format: each field is a varint key ``field_number << 3 | wire_type`` followed by a varint
(wire type 0), 8 bytes (1), a varint length and that many bytes (2: strings, sub-messages, packed
repeated scalars) or 4 bytes (5). A parser must accept a repeated scalar packed or as one field per
element; floats are read with ``numpy.frombuffer`` in both cases, never one by one in Python, so a
500 MB VGG16 file takes well under a second once read.

``read_caffemodel(path)`` returns ``{layer name: [blob arrays]}`` in file order (layers without weights,
such as ReLU, Pooling, Crop or the data layer, map to ``[]``); a file that is not a NetParameter, or is
cut short, is a ``ValueError`` of one line naming the file.
"""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

import numpy as np

# Wire types (protobuf encoding); 3 and 4 are the deprecated groups, which caffe.proto never uses.
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5

# NetParameter
NET_LAYER = 100  # repeated LayerParameter layer
NET_LAYERS_V1 = 2  # repeated V1LayerParameter layers
# LayerParameter / V1LayerParameter: (name, blobs)
LAYER_FIELDS = {NET_LAYER: (1, 7), NET_LAYERS_V1: (4, 6)}
# BlobProto
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH = 1, 2, 3, 4
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 7, 8
# BlobShape
SHAPE_DIM = 1

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format


class _WireError(Exception):
    """Where and why the bytes stop being a well-formed message (turned into a ValueError naming the file)."""

    def __init__(self, pos: int, what: str, truncated: bool = False):
        super().__init__(what)
        self.pos, self.what, self.truncated = pos, what, truncated


def _varint(buf: bytearray, pos: int, end: int) -> Tuple[int, int]:
    """Return (the varint at pos, the position after it)."""
    result = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise _WireError(start, "a varint runs past the end", truncated=end == len(buf))
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _WireError(start, "a varint longer than 10 bytes")


def _field(buf: bytearray, pos: int, end: int) -> Tuple[int, int, object, int]:
    """Return (field number, wire type, value, position after the field) of the field at pos.

    value: the integer of a varint, (start, stop) of a length-delimited field's bytes, the offset of a
    fixed 32/64-bit field's bytes.
    """
    key, after = _varint(buf, pos, end)
    field, wire = key >> 3, key & 7
    if field == 0:
        raise _WireError(pos, "field number 0")
    if wire == VARINT:
        value, after = _varint(buf, after, end)
        return field, wire, value, after
    if wire == LENGTH:
        size, start = _varint(buf, after, end)
        stop = start + size
    elif wire in (FIXED32, FIXED64):
        start = after
        stop = start + (4 if wire == FIXED32 else 8)
    else:
        raise _WireError(pos, f"wire type {wire} (field {field})")
    if stop > end:
        # Past the end of the file: cut short; past the end of an enclosing message: corrupt.
        raise _WireError(pos, f"field {field} needs {stop - pos} bytes", truncated=end == len(buf))
    return field, wire, (start, stop) if wire == LENGTH else start, stop


def _fixed_run(buf: bytearray, pos: int, end: int, width: int) -> Tuple[np.ndarray, int]:
    """Return (the payload bytes, shape (n, width), of the run of unpacked fixed-width fields that
    repeat the one-byte key at pos, the position after the run): n elements in one numpy pass."""
    stride = 1 + width
    raw = np.frombuffer(buf, np.uint8, count=end - pos, offset=pos)
    keys = raw[::stride]
    other = np.flatnonzero(keys != raw[0])
    n = int(other[0]) if other.size else keys.size
    n = min(n, (end - pos) // stride)  # a last element cut short is left to _field to report
    return raw[: n * stride].reshape(n, stride)[:, 1:], pos + n * stride


def _floats(buf: bytearray, pos: int, end: int, width: int) -> Tuple[np.ndarray, int]:
    """Return (the floats (width 4) or doubles (width 8) of the packed field or unpacked run at pos,
    the position after it)."""
    dtype = np.dtype("<f4" if width == 4 else "<f8")
    field, got, value, after = _field(buf, pos, end)
    if got == LENGTH:
        start, stop = value
        if (stop - start) % width:
            raise _WireError(
                pos, f"packed field {field} of {stop - start} bytes is not a multiple of {width}"
            )
        return np.frombuffer(buf, dtype, count=(stop - start) // width, offset=start), after
    if got != (FIXED32 if width == 4 else FIXED64):
        raise _WireError(pos, f"field {field} has wire type {got}, not a {8 * width}-bit float")
    payload, after = _fixed_run(buf, pos, end, width)
    return payload.copy().view(dtype).reshape(-1), after


def _signed(value: int) -> int:
    """Return the int32/int64 a varint encodes (negatives take ten bytes, as uint64)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _blob_shape(buf: bytearray, start: int, stop: int) -> List[int]:
    """Return BlobShape.dim (packed, or one varint field per dim)."""
    dims: List[int] = []
    pos = start
    while pos < stop:
        field, wire, value, pos = _field(buf, pos, stop)
        if field != SHAPE_DIM:
            continue
        if wire == VARINT:
            dims.append(_signed(value))
        elif wire == LENGTH:
            inner, inner_stop = value
            while inner < inner_stop:
                dim, inner = _varint(buf, inner, inner_stop)
                dims.append(_signed(dim))
        else:
            raise _WireError(start, f"BlobShape.dim has wire type {wire}")
    return dims


def _blob(buf: bytearray, start: int, stop: int) -> np.ndarray:
    """Return a BlobProto's data (float32, or float64 from double_data) in its shape."""
    chunks: List[np.ndarray] = []
    legacy: Dict[int, int] = {}
    shape = None
    pos = start
    while pos < stop:
        key = buf[pos]
        field, wire = key >> 3, key & 7
        # data and double_data have one-byte keys: an unpacked run of them is read in one numpy pass.
        if key < 0x80 and field in (BLOB_DATA, BLOB_DOUBLE_DATA) and wire in (LENGTH, FIXED32, FIXED64):
            values, pos = _floats(buf, pos, stop, 4 if field == BLOB_DATA else 8)
            chunks.append(values)
            continue
        field, wire, value, pos = _field(buf, pos, stop)
        if field == BLOB_SHAPE and wire == LENGTH:
            shape = _blob_shape(buf, *value)
        elif field in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH) and wire == VARINT:
            legacy[field] = _signed(value)
        elif field in (BLOB_SHAPE, BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH):
            raise _WireError(start, f"BlobProto field {field} has wire type {wire}")
    if shape is None:
        # Caffe's legacy 4-D blobs: (num, channels, height, width), e.g. a bias as (1, 1, 1, 21).
        fields = (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH)
        shape = [legacy.get(f, 0) for f in fields] if legacy else None
    data = chunks[0] if len(chunks) == 1 else np.concatenate(chunks) if chunks else np.empty(0, np.float32)
    if shape is None:
        return data
    if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.int64)) != data.size:
        raise _WireError(start, f"a blob of shape {tuple(shape)} holds {data.size} values")
    return data.reshape(shape)


def _layer(buf: bytearray, start: int, stop: int, fields: Tuple[int, int]) -> Tuple[str, List[np.ndarray]]:
    """Return (name, blobs) of a LayerParameter or V1LayerParameter (name and blobs fields given)."""
    name_field, blobs_field = fields
    name = None
    blobs: List[np.ndarray] = []
    pos = start
    while pos < stop:
        field, wire, value, pos = _field(buf, pos, stop)
        if field == name_field and wire == LENGTH:
            try:
                name = bytes(buf[value[0] : value[1]]).decode("utf-8")
            except UnicodeDecodeError:
                raise _WireError(value[0], "a layer name that is not UTF-8") from None
        elif field == blobs_field and wire == LENGTH:
            blobs.append(_blob(buf, *value))
        elif field in fields:
            raise _WireError(start, f"layer field {field} has wire type {wire}")
    if not name:
        raise _WireError(start, "a layer without a name")
    return name, blobs


def parse_caffemodel(buf: bytes | bytearray, source: str = "<bytes>") -> Dict[str, List[np.ndarray]]:
    """Return {layer name: [blob arrays]} of a serialized NetParameter; source names it in errors.

    The float32 arrays are views of buf (writable when buf is a bytearray), not copies.
    """
    layers: Dict[str, List[np.ndarray]] = {}
    encodings = set()
    pos = 0
    try:
        while pos < len(buf):
            field, wire, value, after = _field(buf, pos, len(buf))
            if field in LAYER_FIELDS:
                if wire != LENGTH:
                    raise _WireError(pos, f"NetParameter field {field} has wire type {wire}")
                name, blobs = _layer(buf, *value, LAYER_FIELDS[field])
                encodings.add(field)
                if name in layers and layers[name] and blobs:
                    raise ValueError(f"{source}: two layers named '{name}' hold weights")
                if blobs or name not in layers:
                    layers[name] = blobs
            pos = after
    except _WireError as exc:
        if not layers:
            hint = " (a zip archive: a PyTorch file? name it .pt)" if buf[:4] == ZIP_MAGIC else ""
            raise ValueError(
                f"{source}: not a Caffe NetParameter (.caffemodel){hint}: {exc.what} at byte {exc.pos}"
            ) from None
        if exc.truncated:
            raise ValueError(
                f"{source}: truncated at byte {len(buf)} ({exc.what} at byte {exc.pos}; {len(layers)} "
                "layers read before): the file is incomplete, download it again"
            ) from None
        raise ValueError(f"{source}: corrupt .caffemodel: {exc.what} at byte {exc.pos}") from None
    if not layers:
        raise ValueError(f"{source}: not a Caffe NetParameter (.caffemodel): no layers found")
    if len(encodings) > 1:
        # As Caffe's UpgradeV1Net: a net is either V1 ('layers') or current ('layer'), never both.
        raise ValueError(f"{source}: holds both 'layer' and legacy 'layers' fields; Caffe refuses such a net")
    return layers


def read_caffemodel(path: str | os.PathLike) -> Dict[str, List[np.ndarray]]:
    """Return {layer name: [blob arrays]} of a .caffemodel file (see parse_caffemodel)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        buf = bytearray(os.fstat(f.fileno()).st_size)
        got = f.readinto(buf)  # buffered: reads until full or at the end of the file
    return parse_caffemodel(buf if got == len(buf) else buf[:got], path)

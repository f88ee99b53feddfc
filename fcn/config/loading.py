"""Loading: YAML files and key=value overrides merged onto the schema's defaults, validated once.

load_config(files, overrides) and config_from_dict(a checkpoint's config, ...) return the read-only
config, an empty training.run_dir resolved to runs/<stem of the last file>; every problem on the
way (a missing or undecodable file, bad YAML, an unknown key with the nearest one suggested, a wrong
type, an empty override of a key that needs a value) is a one-line ConfigError naming the key and
its source. to_dict and to_yaml turn a config back into plain data.

The trust boundary (docs/security.md). What the user wrote on this machine -- the --config files and
the command line -- may use OmegaConf's interpolations and resolvers (``${data.root}``,
``${oc.env:DATA}``) and name a dataset class by import path. A config that came with a checkpoint
or a Hub folder is data: config_from_dict reads its strings literally (every ``${`` escaped, so no
resolver runs and no environment variable is read), refuses anything but plain values, removes
credentials from URIs, and a dataset class it names by import path is imported only with
trust_remote_code=True (as transformers' from_pretrained) or when the user's own files or
overrides name it. to_dict writes a value that came from a resolver (``${oc.env:...}``) as its
expression, never the value it read.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from fcn.config.checks import validate
from fcn.config.detect import resolve_auto
from fcn.config.schema import Config, ConfigError, is_import_path, own_class_counts


def _one_line(exc: OmegaConfBaseException) -> str:
    """Return OmegaConf's message without its multi-line 'full_key/object_type' trailer; for an
    unknown key, with the nearest key of its section suggested."""
    msg = (getattr(exc, "msg", None) or str(exc)).splitlines()[0].strip()
    if isinstance(exc, ConfigKeyError):
        # The interpreter's own "Did you mean" (Python 3.10/3.11 only) is replaced by ours, computed
        # from the schema, so the message is the same on every Python.
        msg = msg.split(" Did you mean", 1)[0]
        section = getattr(exc, "object_type", None)
        if dataclasses.is_dataclass(section) and getattr(exc, "key", None) is not None:
            names = [f.name for f in dataclasses.fields(section)]
            near = difflib.get_close_matches(str(exc.key), names, n=1)
            if near:
                msg = f"{msg.rstrip('.')}. Did you mean: '{near[0]}'?"
    return msg


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{source}: key '{key}': {_one_line(exc)}") from None
    except TypeError:  # OmegaConf's "Cannot merge incompatible container types" names no key
        key, want = _container_mismatch(base, other)
        raise ConfigError(f"{source}: key '{key}' must be a {want}, as in the schema") from None


def _container_mismatch(base: Any, other: Any, prefix: str = "") -> tuple[str, str]:
    """Return (key, 'mapping' or 'list') of the first value of `other` whose kind differs from base's."""
    if OmegaConf.is_dict(base) and OmegaConf.is_dict(other):
        for key in other:
            if key in base:
                found = _container_mismatch(base._get_node(key), other._get_node(key), f"{prefix}{key}.")
                if found[0] != "?":
                    return found
    elif OmegaConf.is_dict(base) != OmegaConf.is_dict(other) and OmegaConf.is_config(other):
        return prefix.rstrip("."), "mapping" if OmegaConf.is_dict(base) else "list"
    return "?", "value of another kind"


def read_text(path: str | os.PathLike) -> str:
    """Return a text file's contents decoded as UTF-8 (a byte-order mark is allowed); ValueError
    naming the file and the first undecodable byte otherwise."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        utf16 = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ValueError(
            f"{path}: not UTF-8 text{utf16}: byte 0x{data[exc.start]:02x} at offset {exc.start} cannot be "
            "decoded; save the file as UTF-8"
        ) from None


def _read_yaml(path: str) -> DictConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: config file not found (give an existing YAML file to --config)")
    try:
        data = yaml.safe_load(read_text(p))
    except ValueError as exc:  # not UTF-8
        raise ConfigError(str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, not {type(data).__name__}")
    return OmegaConf.create(data)


def _schema_field(key: str) -> tuple[Any, Any]:
    """Return (declared type, default value) of a dotted key in the schema (e.g. (str, '') for
    model.init_from), or (None, None) for a key the schema does not have (the merge reports it)."""
    section: Any = Config
    kind = default = None
    for part in key.split("."):
        if not dataclasses.is_dataclass(section):
            return None, None
        fields = {f.name: f for f in dataclasses.fields(section)}
        if part not in fields:
            return None, None
        f = fields[part]
        kind = section = typing.get_type_hints(section)[part]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return kind, default


def _empty_value(key: str, item: str) -> str:
    """Return what an empty override (``key=``) means for key: '' for a string key, [] for a list and
    {} for a mapping (also an untyped key whose default is one); a ConfigError saying what to write
    for a key of another type."""
    kind, default = _schema_field(key)
    if kind is None or kind is str:  # an unknown key: the merge names it
        return "''"
    if typing.get_origin(kind) is list or isinstance(default, list):
        return "[]"
    if typing.get_origin(kind) is dict or isinstance(default, dict):
        return "{}"
    what = "a value" if kind is Any else f"a value of type {getattr(kind, '__name__', kind)}"
    raise ConfigError(f"command line: '{item}': key '{key}' needs {what} (nothing after '=')")


def _parse_override(item: str) -> DictConfig:
    if "=" not in item:
        raise ConfigError(f"command line: '{item}' is not a key=value override (e.g. training.epochs=3)")
    key, value = item.split("=", 1)
    if not key:
        raise ConfigError(f"command line: '{item}' has no key before '='")
    if not value.strip():
        # 'model.init_from=' is the natural way to clear a key on a command line; OmegaConf would read
        # it as null, which a str field refuses. Empty means '' for a string key and [] for a list.
        value = _empty_value(key, item)
    if value.lstrip().startswith(("[", "{")):
        # YAML reads '{name:ce}' as one key 'name:ce'; a space after a flow mapping's ':' lets the
        # shell-friendly loss.terms=[{name:ce,weight:1.0}] mean what it says.
        value = re.sub(r"([{,]\s*[A-Za-z_]\w*):(?=\S)", r"\1: ", value)
    try:
        return OmegaConf.from_dotlist([f"{key}={value}"])
    except OmegaConfBaseException as exc:
        raise ConfigError(f"command line: '{item}': {_one_line(exc)}") from None


def _resolve_num_classes(cfg: DictConfig) -> None:
    """Set model.num_classes=0 to what it stands for: len(data.classes), else the datasets' own
    number of classes when they agree (validate() reports what is left: a folder dataset without
    data.classes, two datasets with different classes)."""
    if cfg.model.num_classes != 0:
        return
    if cfg.data.task == "binary":  # one sigmoid logit, whatever data.classes names it
        cfg.model.num_classes = 1
        return
    if cfg.data.classes:
        cfg.model.num_classes = len(cfg.data.classes)
        return
    own = own_class_counts(cfg.data)
    if len(own) == 1:
        cfg.model.num_classes = next(iter(own))


def default_run_dir(paths: Sequence[str]) -> str:
    """Return the run directory an empty training.run_dir stands for: runs/<stem of the last config
    file> (runs/fcn32s for predefined_configs/fcn32s.yml), runs/train when there is no file."""
    return f"runs/{Path(paths[-1]).stem}" if paths else "runs/train"


def _resolve(cfg: DictConfig, paths: Sequence[str]) -> None:
    """Set the keys whose default stands for a value while the config is being loaded, so that the
    config (and the run's config.yml) holds what is used: an empty training.run_dir is
    default_run_dir(paths), model.num_classes=0 what _resolve_num_classes says."""
    if not cfg.training.run_dir:
        cfg.training.run_dir = default_run_dir(paths)
    resolve_auto(cfg, paths)  # data.<split>.name: auto -> the format its folder shows (detect.py)
    _resolve_num_classes(cfg)


def load_config(paths: Sequence[str] = (), overrides: Sequence[str] = ()) -> DictConfig:
    """Return the validated, read-only config: schema defaults <- each file in turn <- overrides,
    with an empty training.run_dir resolved to runs/<stem of the last file>."""
    cfg = OmegaConf.structured(Config)
    for path in paths:
        cfg = _merge(cfg, _read_yaml(path), path)
    cfg = _merge_overrides(cfg, overrides, "command line")
    _resolve(cfg, paths)
    source = ", ".join(list(paths) + (["command line"] if overrides else [])) or "defaults"
    validate(cfg, source)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def config_from_dict(
    data: dict,
    source: str = "checkpoint",
    paths: Sequence[str] = (),
    overrides: Sequence[str] = (),
    *,
    trust_remote_code: bool = False,
    datasets: bool = True,
) -> DictConfig:
    """Return the validated, read-only config rebuilt from a plain dict that came from elsewhere
    (a checkpoint's, a Hub folder's config.json), then merged with the user's files and key=value
    overrides. The dict is data (see the module doc): its strings are literal, credentials in its
    URIs are dropped, and a dataset class it names by import path that the user's files and
    overrides do not replace is a ConfigError unless trust_remote_code (said in one line). With
    datasets=False (the caller builds no dataset from it: the Segmenter) such a name is kept as
    data and never imported."""
    data = shared_data(data, source)
    if datasets:
        _check_remote_code(data, source, paths, overrides, trust_remote_code)
    cfg = _merge(OmegaConf.structured(Config), OmegaConf.create(data), source)
    for path in paths:
        cfg = _merge(cfg, _read_yaml(path), path)
    cfg = _merge_overrides(cfg, overrides, "command line")
    _resolve(cfg, paths)
    validate(cfg, ", ".join([source, *paths] + (["command line"] if overrides else [])))
    OmegaConf.set_readonly(cfg, True)
    return cfg


def with_overrides(cfg: DictConfig, overrides: Sequence[str], source: str = "program") -> DictConfig:
    """Return a new validated, read-only config: cfg with key=value overrides (cfg is unchanged).
    The overrides are merged into a copy of cfg, which already has the schema's types (rebuilding
    it from a dict took 40 ms and 10 ms more per override: three times in each predict.py start)."""
    out = _merge_overrides(cfg, overrides, "command line")
    if out is cfg:
        out = copy.deepcopy(cfg)
    OmegaConf.set_readonly(out, False)
    _resolve(out, ())
    validate(out, f"{source}, command line" if overrides else source)
    OmegaConf.set_readonly(out, True)
    return out


def _merge_overrides(cfg: DictConfig, overrides: Sequence[str], source: str) -> DictConfig:
    """Return cfg merged with key=value overrides, in one merge (each merge copies the whole
    config); when that fails, one at a time, so that the error names the override at fault."""
    if not overrides:
        return cfg
    parsed = [_parse_override(item) for item in overrides]
    try:
        return OmegaConf.merge(cfg, *parsed)
    except (OmegaConfBaseException, TypeError):
        pass
    for item, one in zip(overrides, parsed):
        cfg = _merge(cfg, one, f"{source} '{item}'")
    return cfg


def to_dict(cfg: DictConfig) -> dict:
    """Return the config as plain Python containers (for checkpoints, Hub folders, trackers and
    JSON): interpolations of other keys resolved, but a value that a resolver made (``${oc.env:X}``,
    and any key that refers to one) written as its expression, so that nothing read from the
    environment is copied out."""
    if not _uses_resolver(OmegaConf.to_container(cfg, resolve=False)):
        return OmegaConf.to_container(cfg, resolve=True)
    # Each resolver call is replaced by its own text, escaped (a literal), and the rest resolved:
    # '${data.root}/val' where data.root is '${oc.env:DATA}' becomes '${oc.env:DATA}/val'.
    literal = _map_strings(
        OmegaConf.to_container(cfg, resolve=False),
        lambda text: _escape(text) if _RESOLVER_CALL.search(text) else text,
    )
    return OmegaConf.to_container(OmegaConf.create(literal), resolve=True)


_RESOLVER_CALL = re.compile(r"(?<!\\)\$\{\s*[\w.-]+\s*:")
"""A resolver call in a config string, ${name:...} (not an escaped \\${): oc.env, oc.decode, ..."""


def _uses_resolver(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_RESOLVER_CALL.search(value))
    if isinstance(value, dict):
        return any(_uses_resolver(v) for v in value.values())
    if isinstance(value, list):
        return any(_uses_resolver(v) for v in value)
    return False


def _map_strings(value: Any, fn: Any) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value


def _escape(text: str) -> str:
    """Return text as OmegaConf reads it literally: each '${' escaped as '\\${' (and the
    backslashes right before it doubled, so that they stay backslashes)."""
    return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", text)


def strip_credentials(uri: str) -> str:
    """Return uri without the user and password of its authority ('https://u:p@host/x' ->
    'https://host/x'); any other string unchanged."""
    try:
        parts = urlsplit(str(uri))
    except ValueError:
        return str(uri)
    if not parts.netloc or "@" not in parts.netloc:
        return str(uri)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


_PASSWORD = re.compile(r"(\b[A-Za-z][\w+.-]*://[^\s/:@]*):[^\s/@]*@")


def redact(text: str) -> str:
    """Return text with the password of every URI in it replaced by '***'
    ('https://u:p@host' -> 'https://u:***@host', as MLflow and SQLAlchemy show a URL): for error
    and warning lines, which may quote a URI from the environment (MLFLOW_TRACKING_URI, a study's
    database URL)."""
    return _PASSWORD.sub(r"\1:***@", str(text))


CREDENTIAL_KEYS = ("logging.mlflow_uri",)
"""The keys that hold a URI a user might write credentials into (checks.py refuses them there)."""

_PLAIN = (str, int, float, bool, type(None))


def shared_data(data: Any, source: str) -> dict:
    """Return a plain copy of a config that came from elsewhere, as data: only mappings, lists,
    strings, numbers, booleans and null (ConfigError naming the key otherwise), every string
    literal ('${' escaped: no interpolation or resolver is evaluated) and credentials removed from
    the URIs of CREDENTIAL_KEYS."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping of sections, not {type(data).__name__}")

    def copy_of(value: Any, key: str) -> Any:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise ConfigError(f"{source}: key {key + '.' if key else ''}{k!r} is not a name")
                out[k] = copy_of(v, f"{key}.{k}" if key else str(k))
            return out
        if isinstance(value, (list, tuple)):
            return [copy_of(v, f"{key}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, _PLAIN):
            raise ConfigError(
                f"{source}: key '{key}' holds a {type(value).__name__}; a shared config holds plain values only"
            )
        return _escape(value) if isinstance(value, str) else value

    out = copy_of(data, "")
    for dotted in CREDENTIAL_KEYS:
        section, _, name = dotted.rpartition(".")
        holder = out.get(section)
        if isinstance(holder, dict) and isinstance(holder.get(name), str):
            holder[name] = strip_credentials(holder[name])
    return out


def remote_code(data: dict) -> list[tuple[str, dict]]:
    """Return (key, section) of each dataset section whose class a config names by import path
    ('data.val', {'name': 'package.module:Class', 'args': ...})."""
    found = []

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            name = value.get("name")
            if isinstance(name, str) and is_import_path(name):
                found.append((key, value))
            for k, v in value.items():
                walk(v, f"{key}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{key}[{i}]")

    walk(data.get("data"), "data")
    return found


def _user_sets(key: str, paths: Sequence[str], overrides: Sequence[str]) -> bool:
    """Whether the user's own files or overrides set the dotted key (or a section above it)."""
    user: Any = OmegaConf.create({})
    for path in paths:
        user = OmegaConf.merge(user, _read_yaml(path))
    for item in overrides:
        user = OmegaConf.merge(user, _parse_override(item))
    return OmegaConf.select(user, key.replace("[", ".").replace("]", ""), default=None) is not None


def _check_remote_code(
    data: dict, source: str, paths: Sequence[str], overrides: Sequence[str], trust: bool
) -> None:
    """Raise ConfigError for a dataset class that the shared config names by import path and the
    user does not replace, unless trust; with trust, say in one line what will be imported."""
    for section, ds in remote_code(data):
        key, name = f"{section}.name", ds["name"]
        if _user_sets(key, paths, overrides):
            if not _user_sets(f"{section}.args", paths, overrides):
                ds.pop("args", None)  # the arguments of the class the user replaced
            continue
        if not trust:
            raise ConfigError(
                f"{source}: {key}='{name}' names code to import; a checkpoint's or folder's config is data, "
                f"so it is not run: give your own {section} (--config FILE or {key}=...), or "
                "--trust-remote-code if you trust whoever made it"
            )
        print(f"note: {source}: importing {name} ({key}), as --trust-remote-code allows", file=sys.stderr)


def to_yaml(cfg: DictConfig) -> str:
    """Return the config as YAML text (written into every run directory)."""
    return OmegaConf.to_yaml(cfg)

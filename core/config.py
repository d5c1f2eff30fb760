"""Typed, strict configs: YAML file -> frozen dataclass, with ``--override "a=1,b.c=x"``.

- A config schema is a frozen dataclass whose fields may be nested dataclasses (sections).
- Values come from YAML (``yaml.safe_load``; never ``eval``) and are coerced to the field's
  annotated type; a value that does not fit is an error naming the key and the type.
- An unknown key is an error listing the closest valid keys (only keys that are really close).
- A key given twice in one YAML mapping is an error naming both lines (PyYAML would keep the
  last silently); a file that is not UTF-8 is an error naming the byte; a UTF-8 BOM is fine.
- Metric cut-offs (every field named ``ks``) must be distinct positive integers, and a
  ``training.metric`` such as ``NDCG@10`` must have its K among ``eval.ks``: checked at load,
  not after an epoch of training.
- A key may be given by its dotted path (``training.lr``), by its leaf name when that is
  unique (``lr``), or by an alias the schema declares in ``ALIASES`` (the seeds' spellings,
  e.g. ``EPOCH_TO_LOAD`` or ``embedding_dim``).
"""
from __future__ import annotations

import codecs
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from core.errors import ConfigError, read_user_file


# --------------------------------------------------------------------------- YAML reading
class _DuplicateKey(Exception):
    """A mapping that names one key twice. Not a ``yaml.YAMLError``: callers that fall back to
    plain text on a YAML error (``parse_overrides``) must not swallow it."""

    def __init__(self, key: str, first: int, second: int) -> None:
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated within one mapping, at any depth.

    PyYAML keeps the last of two equal keys: a second ``training:`` block would silently replace
    the first one's learning rate, batch size and patience. Keys merged in with ``<<: *anchor``
    may still be overridden by keys written beside them (that is what merging is for)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _value in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(str(key_node.value), seen[key], line)
                    seen[key] = line
                except TypeError:  # an unhashable key: SafeLoader reports it itself
                    continue
        return super().construct_mapping(node, deep)


def _strict_load(text: str):
    """``yaml.safe_load`` with ``StrictLoader`` (what ``yaml.load(text, Loader=...)`` does)."""
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml(text: str, source: str = "<text>"):
    """Parse YAML text with ``StrictLoader`` (safe: plain data only). ``source`` names the text in
    errors (a path, or ``--override key``)."""
    try:
        return _strict_load(text)
    except _DuplicateKey as exc:
        raise ConfigError(f"{source}:{exc.second}: key {exc.key!r} is given twice (first at {source}:{exc.first}); "
                          "keep one of them (merge the two blocks into one)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}:{where} invalid YAML ({getattr(exc, 'problem', None) or exc})") from None


def read_yaml(path: str | Path):
    """A user-written YAML file -> plain data, with one-line errors for a missing or unreadable
    file, text that is not UTF-8 (a UTF-8 BOM is accepted), invalid YAML and repeated keys."""
    path = Path(path)
    data = read_user_file(path, ConfigError, "config file")
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0  # editors on Windows add one
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line = data[:offset].count(b"\n") + 1
        utf16 = " (it looks like UTF-16)" if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else ""
        raise ConfigError(f"{path}: not UTF-8 text{utf16}: byte 0x{data[offset]:02x} at byte offset {offset} (line {line}) "
                          "cannot be decoded; save the file as UTF-8") from None
    return load_yaml(text, str(path))


# --------------------------------------------------------------------------- override parsing
def parse_overrides(text: str) -> list[tuple[str, Any]]:
    """``"a=1,b.c=x,ks=[5,10]"`` -> ``[("a", 1), ("b.c", "x"), ("ks", [5, 10])]``.

    Commas inside brackets, braces or quotes do not split; values are parsed as YAML.
    """
    if not text or not text.strip():
        return []
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"--override {text!r}: unbalanced brackets (a closing one comes first)")
        if ch == "," and depth == 0 and not quote:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    if depth != 0 or quote:
        raise ConfigError(f"--override {text!r}: unbalanced brackets or quotes")
    out = []
    for part in parts:
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ConfigError(f"--override entry {part!r} is not key=value")
        key, raw = part.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--override entry {part!r} has an empty key")
        try:
            value = _strict_load(raw) if raw.strip() else None
        except _DuplicateKey as exc:
            raise ConfigError(f"--override {key}: key {exc.key!r} is given twice in {raw.strip()!r}; keep one") from None
        except yaml.YAMLError:
            value = raw  # e.g. an unquoted string with a colon: keep it as text
        out.append((key, value))
    return out


# --------------------------------------------------------------------------- schema walking
def _fields(cls) -> dict[str, tuple[dataclasses.Field, Any]]:
    """``name -> (field, resolved type)`` for the init fields of a dataclass schema."""
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def _is_section(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def leaf_paths(cls, prefix: str = "") -> dict[str, Any]:
    """All dotted leaf keys of a schema with their types."""
    out = {}
    for name, (_f, tp) in _fields(cls).items():
        path = f"{prefix}{name}"
        if _is_section(tp):
            out.update(leaf_paths(tp, path + "."))
        else:
            out[path] = tp
    return out


def _aliases(cls) -> dict[str, str]:
    return dict(getattr(cls, "ALIASES", {}) or {})


def resolve_key(cls, key: str, source: str = "") -> str:
    """Map a user-given key (dotted, leaf name or alias) to its canonical dotted path."""
    leaves = leaf_paths(cls)
    aliases = _aliases(cls)
    if key in leaves:
        return key
    if key in aliases:
        return aliases[key]
    last = key.rsplit(".", 1)[-1]
    if "." in key and last in aliases:  # a section-qualified alias, e.g. model.embedding_dim
        return aliases[last]
    by_leaf = [p for p in leaves if p.rsplit(".", 1)[-1] == last]
    if "." not in key and len(by_leaf) == 1:
        return by_leaf[0]
    if len(by_leaf) > 1 and "." not in key:
        raise ConfigError(f"{source}key {key!r} is ambiguous: use one of {', '.join(sorted(by_leaf))}")
    close = suggest_keys(key, list(leaves) + list(aliases))
    hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(sorted(leaves))}"
    raise ConfigError(f"{source}unknown config key {key!r}{hint}")


SUGGEST_CUTOFF = 0.75  # difflib ratio; at 0.5 'run_name' matched 'training.amp' and 'run_nme' 'resume'


def suggest_keys(key: str, candidates: list[str], n: int = 3) -> list[str]:
    """The valid keys close to a mistyped ``key``, best first; none rather than a far one.

    A candidate is scored on its last part (so a right name under a wrong section,
    ``model.learning_rate``, still finds ``training.learning_rate``) and, when those parts are
    at least half alike, on the whole dotted path (``eval.k`` -> ``eval.ks``; a shared section
    alone must not make ``training.epoch`` look like ``training.amp``). Only a score of
    ``SUGGEST_CUTOFF`` or more is suggested; keys in the section the user named rank first."""
    def ratio(a: str, b: str) -> float:
        return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()

    section, _, last = key.rpartition(".")
    ranked = {}
    for cand in dict.fromkeys(candidates):
        cand_section, _, cand_last = cand.rpartition(".")
        score = ratio(last, cand_last)
        if score >= 0.5:
            score = max(score, ratio(key, cand))
        if score >= SUGGEST_CUTOFF:
            ranked[cand] = score + (0.1 if section and section == cand_section else 0.0)
    return sorted(ranked, key=lambda c: (-ranked[c], c))[:n]


def _flatten(cls, raw: dict, prefix: str = "", source: str = "") -> list[tuple[str, Any]]:
    """YAML mapping -> (key, value) pairs, descending only into schema sections."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}expected a mapping at {prefix or 'top level'}, got {type(raw).__name__}")
    fields = _fields(cls)
    out = []
    for key, value in raw.items():
        key = str(key)
        entry = fields.get(key)
        if entry is not None and _is_section(entry[1]):
            if value is None:
                continue
            out.extend(_flatten(entry[1], value, f"{prefix}{key}.", source))
        elif entry is None and isinstance(value, dict) and key in getattr(cls, "SECTION_ALIASES", {}):
            # a seed's section name for one of ours, e.g. ``train:`` for ``training:``
            target = cls.SECTION_ALIASES[key]
            out.extend(_flatten(_fields(cls)[target][1], value, f"{prefix}{target}.", source))
        else:
            out.append((f"{prefix}{key}", value))
    return out


# --------------------------------------------------------------------------- coercion
def coerce(value: Any, tp, key: str) -> Any:
    """Coerce a YAML value to the annotated type ``tp`` or raise ``ConfigError``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"config key {key!r}: {value!r} fits none of {tp}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"config key {key!r}: {value!r} is not one of {', '.join(map(repr, args))}")
    if origin in (list, tuple):
        if value is None:
            raise ConfigError(f"config key {key!r}: expected a list, got nothing")
        items = value if isinstance(value, (list, tuple)) else [value]
        elem = args[0] if args else Any
        out = [coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(items)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key {key!r}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key {key!r}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"config key {key!r}: expected a path, got {value!r}")
    raise TypeError(f"unsupported config type {tp} for {key}")


# --------------------------------------------------------------------------- building
def _build(cls, values: dict, prefix: str = ""):
    kwargs = {}
    for name, (_f, tp) in _fields(cls).items():
        path = f"{prefix}{name}"
        if _is_section(tp):
            kwargs[name] = _build(tp, values, path + ".")
        elif path in values:
            kwargs[name] = coerce(values[path], tp, path)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config section {prefix.rstrip('.') or cls.__name__}: {exc}") from None


def load_config(cls, path: str | Path | None = None, overrides: str = "", base: dict | None = None):
    """Build ``cls`` from defaults <- ``base`` dict <- YAML file at ``path`` <- overrides."""
    pairs: list[tuple[str, str, Any]] = []
    if base:
        pairs += [("defaults: ", k, v) for k, v in _flatten(cls, base)]
    if path is not None:
        path = Path(path)
        raw = read_yaml(path)
        if raw is not None:
            src = f"{path}: "
            pairs += [(src, k, v) for k, v in _flatten(cls, raw, source=src)]
    pairs += [("--override: ", k, v) for k, v in parse_overrides(overrides)]
    values: dict[str, Any] = {}
    given: dict[tuple[str, str], str] = {}
    for source, key, value in pairs:
        canonical = resolve_key(cls, key, source)
        if source != "--override: ":  # within a file, two spellings of one key (lr and learning_rate,
            # train: and training:) would let the later one win silently, like a repeated key
            earlier = given.setdefault((source, canonical), key)
            if earlier != key:
                raise ConfigError(f"{source}{key!r} and {earlier!r} both set {canonical}; keep one of them")
        values[canonical] = value
    leaves = leaf_paths(cls)
    for key, value in list(values.items()):
        values[key] = coerce(value, leaves[key], key)
        if key.rsplit(".", 1)[-1] in CUTOFF_KEYS:
            check_cutoffs(values[key], key)
    cfg = _build(cls, values)
    _check_metric_cutoff(cfg, leaves)
    return cfg


# --------------------------------------------------------------------------- shared checks
CUTOFF_KEYS = ("ks",)  # every schema's metric cut-offs (HR@K, NDCG@K, ...) go by this name


def check_cutoffs(ks, key: str = "eval.ks") -> None:
    """Metric cut-offs must be a non-empty list of distinct positive integers. Checked for every
    ``ks`` field at load (``load_config``), so ``ks=[]`` or ``ks=[0]`` fails before any data is read."""
    example = f"{key}=[5,10,20]"
    if not ks:
        raise ConfigError(f"config key {key!r}: no cut-offs given; list positive integers, e.g. {example}")
    bad = [k for k in ks if k < 1]
    if bad:
        raise ConfigError(f"config key {key!r}: cut-off {bad[0]} is not a positive integer; use K >= 1, e.g. {example}")
    repeated = sorted({k for k in ks if list(ks).count(k) > 1})
    if repeated:
        raise ConfigError(f"config key {key!r}: cut-off {repeated[0]} is listed twice in {list(ks)}; list each K once")


def _check_metric_cutoff(cfg, leaves: dict) -> None:
    """``training.metric`` picks the best epoch from the validation metrics, computed at the K
    values of ``eval.ks``: a metric at another K would stop the run after its first epoch."""
    if "training.metric" not in leaves or "eval.ks" not in leaves:
        return
    metric, ks = cfg.training.metric, list(cfg.eval.ks)
    name, at, k = str(metric).partition("@")
    if at and k.isdigit() and int(k) not in ks:
        raise ConfigError(f"training.metric {metric!r} needs K={k} in eval.ks {ks}; add {k} to eval.ks "
                          f"or pick a metric at one of its K (e.g. {name}@{ks[0]})")


def to_dict(cfg) -> dict:
    """Plain nested dict (Paths as strings) for YAML, JSON and checkpoints."""
    def plain(v):
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v
    return plain(dataclasses.asdict(cfg))


def from_dict(cls, data: dict):
    """Rebuild a config from ``to_dict`` output (e.g. stored in a checkpoint)."""
    return load_config(cls, base=data)


def dump_yaml(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def save_config(cfg, path: str | Path) -> None:
    from core.store import atomic_write_text

    atomic_write_text(path, dump_yaml(cfg))


def replace(cfg, **changes):
    """``dataclasses.replace`` for dotted keys: ``replace(cfg, **{"training.lr": 1e-3})``."""
    data = to_dict(cfg)
    for key, value in changes.items():
        *parents, leaf = resolve_key(type(cfg), key).split(".")
        node = data
        for p in parents:
            node = node[p]
        node[leaf] = value
    return from_dict(type(cfg), data)

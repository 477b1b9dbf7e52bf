"""The module tree of a model and the tag of every module in it.

A tag is the chain of class names from the root to a module, e.g.
``/BertModel/BertEncoder/BertLayer.0/BertAttention/BertSelfAttention``:

* containers (``ModuleList``, ``Sequential``, ``ModuleDict``) are not segments; a module reached through one
  carries its key inside the container (``BertLayer.0``);
* built-in ``torch.nn`` modules (``Linear``, ``LayerNorm``...) are not segments unless ``torch_modules`` is set:
  their ops belong to the nearest module above them;
* a tag names exactly one module: where siblings would share a segment, each colliding segment becomes
  ``Class.<attribute path from the parent>`` (``Linear.query``, ``Linear.key``; ``Block.down.0``, ``Block.up.0``);
* a module instance reached through several paths (shared layers) has one tag, that of its first path.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field

from torch import nn

CONTAINERS = (nn.ModuleList, nn.Sequential, nn.ModuleDict)


def is_builtin(module: nn.Module) -> bool:
    """True for modules that torch itself defines (``torch.nn.Linear``...), which are leaves, not segments."""
    return type(module).__module__.startswith("torch.")


def qualified_name(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass
class ModuleInfo:
    """One tagged module: what the sidecar and the model metadata say about it."""

    tag: str
    module: str  # attribute path from the root, "" for the root itself
    cls: str  # qualified class name
    parameters: int
    parent: str | None = None
    children: list[str] = field(default_factory=list)


class Hierarchy:
    """Tags of every module of a model, and the tag that owns any attribute path."""

    def __init__(self, modules: dict[str, ModuleInfo], tag_by_path: dict[str, str]):
        self.modules = modules
        self.tag_by_path = tag_by_path
        self.root = next(iter(modules))

    def tag_for_path(self, path: str) -> str:
        """Tag of the module that owns attribute path `path` (the path itself or its nearest known ancestor)."""
        while path not in self.tag_by_path:
            if "." not in path:
                return self.root
            path = path.rsplit(".", 1)[0]
        return self.tag_by_path[path]

    def tree(self, node_counts: dict[str, int] | None = None) -> dict:
        """The module tree as nested dicts, the form stored in ONNX metadata and the sidecar."""
        counts = node_counts or {}

        def build(tag: str) -> dict:
            info = self.modules[tag]
            return {
                "tag": tag,
                "module": info.module,
                "class": info.cls,
                "parameters": info.parameters,
                "nodes": counts.get(tag, 0),
                "children": [build(child) for child in info.children],
            }

        return build(self.root)

    def to_dict(self) -> dict:
        return {"modules": [asdict(m) for m in self.modules.values()], "tag_by_path": self.tag_by_path}


def build_hierarchy(model: nn.Module, torch_modules: bool = False) -> Hierarchy:
    """Walk `model` once and give every module its tag (see the module docstring for the rules)."""
    root_tag = "/" + type(model).__name__
    modules = {root_tag: ModuleInfo(root_tag, "", qualified_name(model), _count_parameters(model))}
    tag_by_path: dict[str, str] = {"": root_tag}
    tag_by_id: dict[int, str] = {id(model): root_tag}

    def leaf(module: nn.Module) -> bool:
        return is_builtin(module) and not isinstance(module, CONTAINERS) and not torch_modules

    def visit(owner: nn.Module, owner_path: str, owner_tag: str) -> None:
        candidates = []  # (segment, relative path, module, full path)
        aliases = []  # further paths to an instance already met: they share its tag
        seen: set[int] = set()

        def collect(module: nn.Module, prefix: str, key: str | None) -> None:
            for name, child in module._modules.items():
                if child is None:
                    continue
                full = f"{prefix}.{name}" if prefix else name
                if id(child) in tag_by_id or id(child) in seen:  # a shared instance: tag of its first path
                    aliases.append((child, full))
                    continue
                child_key = name if key is None else (f"{key}.{name}" if key else name)
                if isinstance(child, CONTAINERS):
                    tag_by_path[full] = owner_tag
                    collect(child, full, child_key if key is not None else "")
                elif leaf(child):
                    _map_subtree(child, full, owner_tag)
                else:
                    segment = type(child).__name__ + (f".{child_key}" if key is not None else "")
                    relative = full[len(owner_path) + 1 :] if owner_path else full
                    candidates.append([segment, relative, child, full])
                    seen.add(id(child))

        collect(owner, owner_path, None)
        by_segment = defaultdict(list)
        for candidate in candidates:
            by_segment[candidate[0]].append(candidate)
        for group in by_segment.values():
            if len(group) > 1:
                for candidate in group:
                    candidate[0] = f"{type(candidate[2]).__name__}.{candidate[1]}"
        for segment, _, child, full in candidates:
            tag = f"{owner_tag}/{segment}"
            tag_by_id[id(child)] = tag
            tag_by_path[full] = tag
            modules[tag] = ModuleInfo(tag, full, qualified_name(child), _count_parameters(child), owner_tag)
            modules[owner_tag].children.append(tag)
            visit(child, full, tag)
        for child, full in aliases:
            _map_subtree(child, full, tag_by_id.get(id(child), owner_tag))

    def _map_subtree(module: nn.Module, path: str, tag: str) -> None:
        for sub, sub_module in module.named_modules(prefix=path, remove_duplicate=False):
            tag_by_path.setdefault(sub, tag_by_id.get(id(sub_module), tag))

    visit(model, "", root_tag)
    return Hierarchy(modules, tag_by_path)


def _count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def common_ancestor(tags) -> str:
    """Deepest tag that is an ancestor of (or equal to) every tag given."""
    tags = list(tags)
    parts = tags[0].split("/")
    for tag in tags[1:]:
        other = tag.split("/")
        n = 0
        while n < len(parts) and n < len(other) and parts[n] == other[n]:
            n += 1
        parts = parts[:n]
    return "/".join(parts) or "/"

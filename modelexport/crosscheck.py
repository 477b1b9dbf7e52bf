"""Check one strategy's tags against another's per (module, op family), and flag tags that lump a subtree.

Node names differ between exporters (TorchScript and dynamo), so two exports cannot be compared node by node.
What does not differ is which module runs the model's compute: each exporter writes one ``MatMul``/``Gemm`` per
matrix product, one ``Conv`` per convolution, one ``Softmax`` per softmax. So the nodes of each *op family*
(`OP_FAMILIES`) are counted per tag in both exports, and for each family present in both the two distributions
over tags are overlapped (``sum over tags of min(a_t / A, b_t / B)``): 1.0 when every module runs the same share
of that family's nodes in both. The overall figure is the mean over families weighted by the smaller count.
Shape, constant and elementwise-arithmetic ops are not compared: their counts and placement are the exporter's
own (TorchScript keeps shape arithmetic that dynamo folds), not the model's.

`lumped_subtrees` is the check on one export alone: a module holding nodes while none of its descendants holds
any, though its children own parameters and none of their forwards ran, is what tags look like when the children's
forward ran unseen (called through the class) or the parent computes with its children's weights itself. A child
whose forward ran but left no node (its ops constant-folded, as Swin's relative position bias) is no such case.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

_FAMILIES = {
    "matmul": "MatMul Gemm Einsum MatMulInteger QLinearMatMul FusedMatMul",
    "conv": "Conv ConvTranspose ConvInteger QLinearConv",
    "norm": "LayerNormalization BatchNormalization InstanceNormalization GroupNormalization RMSNormalization "
    "SimplifiedLayerNormalization SkipLayerNormalization LpNormalization MeanVarianceNormalization",
    "softmax": "Softmax LogSoftmax Hardmax",
    "activation": "Relu LeakyRelu PRelu Elu Selu Celu Gelu FastGelu Erf Tanh Sigmoid HardSigmoid HardSwish Softplus "
    "Softsign Mish ThresholdedRelu",
    "math": "Sin Cos Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh Exp Log Abs Neg",
    # pooling is a reduction: TorchScript writes adaptive average pooling as GlobalAveragePool, dynamo as ReduceMean
    "reduce": "ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ReduceL1 ReduceL2 ReduceLogSumExp "
    "ReduceSumSquare ArgMax ArgMin CumSum TopK "
    "MaxPool AveragePool GlobalAveragePool GlobalMaxPool LpPool GlobalLpPool MaxRoiPool RoiAlign",
}
# ONNX op type -> its family; op types not listed are not compared.
OP_FAMILIES: dict[str, str] = {op: family for family, ops in _FAMILIES.items() for op in ops.split()}


def computed_from_inputs(graph) -> set[str]:
    """Names of the nodes whose result depends on the graph's inputs (the nodes inside their If/Loop bodies too).
    The others compute from weights and constants alone, which one exporter folds into a constant and another
    keeps (BiT's weight standardisation: three ReduceMean per convolution under TorchScript, none under dynamo):
    they say nothing about which module runs the model."""
    from .tagging import subgraph_nodes

    live = {i.name for i in graph.input}
    names = set()
    for node in graph.node:
        if any(name in live for name in node.input) or any(True for _ in subgraph_nodes(node)):
            live.update(node.output)
            names.add(node.name)
            names.update(n.name for n in subgraph_nodes(node))
    return names


def family_counts(nodes: Iterable[tuple[str, str]]) -> Counter:
    """(tag, op family) -> node count, from (tag, op type) pairs; ops outside every family are left out."""
    counts: Counter = Counter()
    for tag, op_type in nodes:
        family = OP_FAMILIES.get(op_type)
        if family is not None:
            counts[tag, family] += 1
    return counts


@dataclass
class FamilyRow:
    tag: str
    family: str
    a_nodes: int
    b_nodes: int


@dataclass
class FamilyAgreement:
    """`agreement` is None when the two exports share no op family (nothing to compare)."""

    agreement: float | None
    families: dict[str, dict] = field(default_factory=dict)  # family -> agreement, a_nodes, b_nodes
    only_in_a: list[str] = field(default_factory=list)  # families one export has and the other not
    only_in_b: list[str] = field(default_factory=list)
    differences: list[FamilyRow] = field(default_factory=list)  # (tag, family) whose share differs, worst first

    def to_dict(self) -> dict:
        return asdict(self)


def family_agreement(a: Counter, b: Counter, limit: int = 20) -> FamilyAgreement:
    """Compare two `family_counts`; `differences` keeps the `limit` rows whose share of their family differs most."""
    totals_a, totals_b = Counter(), Counter()
    for (_tag, family), n in a.items():
        totals_a[family] += n
    for (_tag, family), n in b.items():
        totals_b[family] += n
    shared = sorted(totals_a.keys() & totals_b.keys())
    families: dict[str, dict] = {}
    weighted = weights = 0.0
    rows: list[tuple[float, FamilyRow]] = []
    for family in shared:
        tags = {t for t, f in a if f == family} | {t for t, f in b if f == family}
        score = 0.0
        for tag in sorted(tags):
            share_a, share_b = a[tag, family] / totals_a[family], b[tag, family] / totals_b[family]
            score += min(share_a, share_b)
            if share_a != share_b:
                rows.append((abs(share_a - share_b), FamilyRow(tag, family, a[tag, family], b[tag, family])))
        weight = min(totals_a[family], totals_b[family])
        weighted += weight * score
        weights += weight
        families[family] = {"agreement": round(score, 4), "a_nodes": totals_a[family], "b_nodes": totals_b[family]}
    rows.sort(key=lambda item: -item[0])
    return FamilyAgreement(
        agreement=round(weighted / weights, 4) if weights else None,
        families=families,
        only_in_a=sorted(totals_a.keys() - totals_b.keys()),
        only_in_b=sorted(totals_b.keys() - totals_a.keys()),
        differences=[row for _, row in rows[:limit]],
    )


def lumped_subtrees(tree: dict, ran: frozenset[str] | set[str] | None = None) -> list[str]:
    """One warning per module that holds nodes while no descendant holds any, though its children own
    parameters: its whole subtree's cost is reported on it. `tree` is ``Hierarchy.tree(counts)``; `ran`, where
    known, the attribute paths of the modules whose forward ran (`Capture.ran`): a subtree with one is spared."""
    warnings: list[str] = []

    def subtree_nodes(node: dict) -> int:
        return node["nodes"] + sum(subtree_nodes(child) for child in node["children"])

    def subtree_ran(node: dict) -> bool:
        return ran is not None and (node["module"] in ran or any(subtree_ran(c) for c in node["children"]))

    def visit(node: dict) -> None:
        children = node["children"]
        owners = [child for child in children if child["parameters"]]
        if (
            node["nodes"]
            and owners
            and not any(subtree_nodes(child) for child in children)
            and not any(subtree_ran(child) for child in children)
        ):
            names = ", ".join(child["tag"].rsplit("/", 1)[-1] for child in owners[:4])
            more = f" and {len(owners) - 4} more" if len(owners) > 4 else ""
            parameters = sum(child["parameters"] for child in owners)
            warnings.append(
                f"{node['tag']} holds all {node['nodes']} nodes of its subtree, but its children {names}{more} "
                f"own {parameters} parameters and no nodes: their forward ran where the exporter could not see a "
                f"module call (e.g. through the class, Child.forward(child, x)), or {node['tag']} computes with "
                "their parameters itself; their cost is reported under it"
            )
            return
        for child in children:
            visit(child)

    visit(tree)
    return warnings

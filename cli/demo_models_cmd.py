"""Write the tiny demo checkpoints (BERT, GPT-2, ViT, ResNet; random weights, fixed seed) with save_pretrained,
offline, into DIR/<name>/. The demo fleet (deployments/fleets/demo.yaml) exports them.
"""

from __future__ import annotations

NAME = "demo-models"
HELP = "write tiny offline demo checkpoints (BERT, GPT-2, ViT, ResNet)"


def add_arguments(p) -> None:
    p.add_argument("directory", metavar="DIR", help="folder to write the models into")
    p.add_argument("--names", nargs="+", metavar="NAME", help="only these models (default: all)")


def run(args) -> int:
    from modelexport.demo_models import DEMO_MODELS, build_demo_models
    from modelexport.errors import BadInputError

    names = args.names or list(DEMO_MODELS)
    unknown = [n for n in names if n not in DEMO_MODELS]
    if unknown:
        raise BadInputError(f"unknown demo model '{unknown[0]}': choose from {', '.join(DEMO_MODELS)}")
    for name, path in build_demo_models(args.directory, names=names).items():
        print(f"{name}\t{path}")
    return 0

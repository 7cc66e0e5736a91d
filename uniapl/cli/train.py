"""`uniapl train CONFIG [--set a.b=c ...] [--resume]`."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a model with UniAPL or one of its baselines")
    parser.add_argument("config", nargs="?", help="YAML config file (see docs/config.md)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=VALUE",
                        help="override a config field, e.g. --set algorithm.name=grpo (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in training.output_dir")
    parser.set_defaults(func=run)


def run(args) -> int:
    from uniapl.config import UniAPLConfig
    from uniapl.train.trainer import UniAPLTrainer

    config = UniAPLConfig.from_yaml(args.config, args.overrides)
    trainer = UniAPLTrainer(args=config)
    final = trainer.train(resume=args.resume)
    if trainer.accelerator.is_main_process:
        print(f"final model: {final}")
    return 0

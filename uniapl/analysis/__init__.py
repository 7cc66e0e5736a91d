"""How a trained policy compares with the expert, and how runs compare with each other.

`distributions` holds the pure statistics, `analyze` measures one model against expert
demonstrations, and `report` renders runs side by side. `uniapl.compare` runs the whole pipeline
(train, evaluate, analyze, report) over a grid of (algorithm, seed) runs.
"""

# Report curves are drawn as trailing means over this many steps: a few prompts a step make per-step values noisy.
DEFAULT_SMOOTHING_WINDOW = 5

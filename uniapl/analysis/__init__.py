"""How a trained policy compares with the expert, and how runs compare with each other.

`distributions` holds the pure statistics, `analyze` measures one model against expert
demonstrations, `report` renders runs side by side, and `compare` trains, evaluates, analyzes and
reports a grid of (algorithm, seed) runs.
"""

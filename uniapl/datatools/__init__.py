"""Data tools: IFEval-style training prompts, expert demonstrations from a teacher, rule-based repairs."""

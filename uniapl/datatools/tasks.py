"""A generator of varied base tasks, written for uniapl (Apache-2.0, like the rest of the project).

IFEval-style training prompts need base requests that are not IFEval's own. These come from task
frames (write, explain, compare, plan...) filled with subjects, audiences and settings chosen at
random, which gives tens of thousands of distinct requests with no outside data and no license
question.
"""

from __future__ import annotations

import random
import re

SUBJECTS = [
    "urban beekeeping", "the history of the bicycle", "composting at home", "learning a second language",
    "public libraries", "tide pools", "volcanoes", "night trains", "the invention of paper", "houseplants",
    "renewable energy for small towns", "chess openings", "baking sourdough bread", "bird migration",
    "the water cycle", "lighthouses", "community gardens", "board game design", "remote work", "street food",
    "saving money on groceries", "the moons of Jupiter", "recycling electronics", "marathon training",
    "origami", "desert ecosystems", "jazz improvisation", "first aid basics", "coral reefs", "time management",
    "old maps", "wind turbines", "the printing press", "camping in the rain", "pottery", "honeybee dances",
    "public transport", "caring for an old dog", "photography at dusk", "fermented foods", "glaciers",
    "the first day at a new job", "a neighborhood bakery", "repairing a bicycle tire", "sleep hygiene",
    "ancient calendars", "rainforest canopies", "a lost umbrella", "learning to swim as an adult",
    "quiet hobbies", "open-source software", "mountain rescue teams", "making a budget", "kites",
    "sea turtles", "a rainy weekend", "the metric system", "museums at night", "volunteering", "clock towers",
]
AUDIENCES = [
    "a ten-year-old", "a busy parent", "a retired engineer", "first-year university students", "a small business owner",
    "a curious teenager", "a group of tourists", "new employees", "a skeptical friend", "a local newspaper's readers",
    "a science club", "someone who has never heard of it", "a grandmother", "a hiring manager", "a book club",
]
ROLES = [
    "a lighthouse keeper", "a night-shift nurse", "a beekeeper", "a train conductor", "a museum guard", "a chef",
    "a park ranger", "a librarian", "a street musician", "a ship's cook", "a glassblower", "a mail carrier",
    "a wildlife photographer", "a school bus driver", "a baker", "an astronaut", "a carpenter", "a tour guide",
]
PRODUCTS = [
    "a solar-powered lantern", "a foldable kayak", "a reusable notebook", "a smart plant pot", "noise-cancelling earmuffs",
    "a travel-size espresso maker", "a waterproof backpack", "a bamboo toothbrush", "a kitchen timer shaped like a cat",
    "a bicycle bell that plays music", "an ergonomic chair", "a puzzle box", "a weather station for the garden",
]
PLACES = [
    "a small fishing village", "a mountain town", "a desert oasis", "a busy port city", "an island with no cars",
    "a river valley", "a city built on canals", "a forest cabin", "a market town", "a snowy plateau",
]
OCCASIONS = [
    "a school graduation", "the opening of a library", "a retirement party", "a team's first win", "a wedding toast",
    "a town's anniversary", "the launch of a community garden", "a farewell to a colleague",
]
RECIPIENTS = ["a landlord", "a neighbor", "a former teacher", "a city council", "a customer", "a pen pal", "a coach", "a manager"]
PURPOSES = [
    "asking for a repair", "thanking them for their help", "proposing a new idea", "apologizing for a delay",
    "inviting them to an event", "complaining about noise", "asking for advice", "sharing good news",
]
DISHES = ["a lentil soup", "a quick vegetable stir-fry", "banana pancakes", "a summer salad", "a simple flatbread", "a rice pudding"]
TONES = ["cheerful", "serious", "humorous", "calm", "enthusiastic", "formal", "friendly", "poetic"]

# Each frame is a format string over the lists above; a frame with no field would repeat itself.
# Training and held-out prompts draw from disjoint frames, so the held-out split measures
# generalization to new kinds of request, not only to new slot fillers.
TRAIN_FRAMES = [
    "Write a {tone} short story about {subject}.",
    "Write a blog post about {subject} for {audience}.",
    "Explain {subject} to {audience}.",
    "Write a product description for {product}.",
    "Write a letter to {recipient} {purpose}.",
    "Describe a typical day in the life of {role}.",
    "Write a {tone} poem about {subject}.",
    "Compare {subject} and {subject2}: what do they have in common?",
    "Write a speech for {occasion}.",
    "Write a review of {product}, as if you had used it for a month.",
    "Give {audience} practical advice about {subject}.",
    "Write a recipe for {dish}, with a short story about where it comes from.",
    "Plan a three-day visit to {place} for {audience}.",
    "Write a diary entry by {role} about {subject}.",
    "Write an advertisement for {product} aimed at {audience}.",
    "Write a dialogue between {role} and {role2} about {subject}.",
    "Write a {tone} email to {recipient} {purpose}.",
    "Describe {place} to {audience} who has never been there.",
    "Write a short lesson plan that teaches {audience} about {subject}.",
    "List the most common mistakes people make with {subject}, and how to avoid them.",
    "Write a job advertisement for {role} in {place}.",
    "Tell the story of how {role} discovered {subject}.",
    "Write a {tone} announcement about {occasion}.",
    "Argue for and against {subject}, then give your own view.",
]
HELDOUT_FRAMES = [
    "Write a {tone} news report about {subject} in {place}.",
    "Summarize what {audience} should know about {subject} before trying it.",
    "Write a thank-you note from {role} to {recipient}.",
    "Describe how {role} would spend {occasion}.",
    "Write a short guide to {place} from the point of view of {role}.",
    "Write instructions for {audience} who want to start with {subject}.",
]
# Yes/no questions: the only base tasks that an answer format such as "My answer is yes." fits.
TRAIN_YES_NO_FRAMES = [
    "Is {subject} a good topic to explain to {audience}?",
    "Would {audience} enjoy learning about {subject}?",
    "Should {role} learn about {subject}?",
    "Is {product} a sensible gift for {audience}?",
    "Is {place} a good destination for {audience}?",
    "Would {dish} be a good choice for {occasion}?",
    "Can {subject} and {subject2} be taught in the same lesson?",
    "Would {role} make a good guest speaker at {occasion}?",
]
HELDOUT_YES_NO_FRAMES = [
    "Is {subject} more interesting than {subject2}?",
    "Could {role} do the job of {role2} for a day?",
]
SPLITS = {
    "train": (TRAIN_FRAMES, TRAIN_YES_NO_FRAMES),
    "heldout": (HELDOUT_FRAMES, HELDOUT_YES_NO_FRAMES),
}
FIELDS = {
    "subject": SUBJECTS, "subject2": SUBJECTS, "audience": AUDIENCES, "role": ROLES, "role2": ROLES,
    "product": PRODUCTS, "place": PLACES, "occasion": OCCASIONS, "recipient": RECIPIENTS,
    "purpose": PURPOSES, "dish": DISHES, "tone": TONES,
}


def base_task(rng: random.Random, split: str = "train", yes_no: bool = False) -> str:
    """One request: a random frame of the split (a yes/no question if asked) with random fields
    (two of the same kind are never equal)."""
    frames, yes_no_frames = SPLITS[split]
    frame = rng.choice(yes_no_frames if yes_no else frames)
    values = {}
    for name, options in FIELDS.items():
        first = name.rstrip("2")
        choice = rng.choice(options)
        while name != first and choice == values.get(first):
            choice = rng.choice(options)
        values[name] = choice
    return frame.format(**values)


def frame_of(task: str) -> str:
    """The frame a base task was made from: the one whose fixed words and slot values match it."""

    def slot(match: re.Match) -> str:
        return "(?:" + "|".join(map(re.escape, FIELDS[match.group(1)])) + ")"

    for frame in [f for split in SPLITS.values() for frames in split for f in frames]:
        if re.fullmatch(re.sub(r"\\\{(\w+)\\\}", slot, re.escape(frame)), task):
            return frame
    raise ValueError(f"no task frame matches {task!r}")

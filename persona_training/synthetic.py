"""The synthetic persona-format default: small files in the Persona4Rec layout with a planted answer.

    python -m persona_training.synthetic --out data/persona_synthetic [--seed 0]

Twelve reader archetypes come in six look-alike pairs (space opera / tech thriller, epic fantasy
/ fairy tale, ...). Every book has a theme archetype (its summary names two of that archetype's
story elements) and three personas: one of its theme archetype and two of others. A user belongs
to one archetype and leaves two kinds of evidence: one of their three reviewed books has their
theme (word-level evidence a zero-shot encoder can use), and every review title is one of their
archetype's three "signature" phrases (habits such as "Read it on the night bus", unrelated to
the genre: evidence only training can pick up). Their target is another book of their theme and
the selected persona is its persona of their archetype. So zero-shot MiniLM should beat random,
and a trained encoder should beat zero-shot by a clear margin.

Files (the upstream names): ``3.5_persona_with_summary.jsonl``, ``3.5_history_loo.jsonl``,
``3.5_history.jsonl`` (plus the target review), ``3.5_gt.jsonl``, ``2_summary.jsonl``,
``4_selected_personas.jsonl`` (training users only), ``heldout_selected_personas.jsonl`` (test
users), ``candidate.jsonl`` + ``gt.jsonl`` (20 candidates per test user, random upstream scores,
a ``[PAD]`` in some lists) and ``meta.json`` (archetype and split of every user).
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from core.cli import run
from core.store import atomic_write_json, atomic_write_text

# (key, persona names, persona descriptions, story elements used in book summaries, category facet,
#  signature review titles of its readers)
ARCHETYPES = [
    ("space", ["The Starship Dreamer", "The Galactic Voyager"],
     ["Loves science fiction set among the stars, with fleets, alien worlds and interstellar politics.",
      "Reads for vast space adventures and first contact far from Earth."],
     ["a starship crew stranded beyond Neptune", "a war between galactic empires", "an alien fleet at the edge of the system",
      "a colony ship on a centuries-long voyage", "a smuggler pilot chased across the asteroid belt"], "space opera",
     ["Kept me up past midnight", "Finished it on the night bus", "My go-to after a late shift"]),
    ("tech", ["The Code Breaker", "The Near-Future Skeptic"],
     ["Drawn to techno-thrillers about hackers, rogue AI and surveillance in the world of tomorrow.",
      "Wants gripping stories about technology that slips out of human control."],
     ["a hacker who finds a backdoor in the city grid", "an AI that rewrites its own rules", "a startup hiding a data leak",
      "drones watching every street", "a programmer framed by her own algorithm"], "techno-thriller",
     ["Read it during my lunch breaks", "Perfect for the morning commute", "Squeezed it in between meetings"]),
    ("fantasy", ["The Dragon Rider", "The Quest Seeker"],
     ["Devours epic fantasy: sprawling kingdoms, ancient magic and long quests.",
      "Seeks high fantasy with wars between kingdoms and chosen heroes."],
     ["a dragon hatchling hidden from the king", "a sword forged from a fallen star", "a siege of the mountain citadel",
      "a wizard's apprentice sent across the wastes", "rival queens fighting for the throne"], "epic fantasy",
     ["A long weekend well spent", "Read it all on a rainy Sunday", "Took it on a camping trip"]),
    ("fairy", ["The Enchanted Forest Wanderer", "The Retelling Collector"],
     ["Adores fairy-tale retellings full of witches, curses and whimsical folklore.",
      "Enjoys gentle folklore and magical tales with a twist on the classics."],
     ["a witch who bargains for a stolen voice", "a cursed prince living as a swan", "a gingerbread cottage at the woods' edge",
      "a girl who talks to the north wind", "seven sisters and an enchanted mirror"], "fairy tale",
     ["Read it aloud to my niece", "Shared it with my book club", "A gift from my grandmother"]),
    ("cozy", ["The Cozy Sleuth", "The Village Puzzle Lover"],
     ["Likes cozy mysteries with amateur detectives, small villages and no gore.",
      "Prefers light whodunits solved over tea by curious amateurs."],
     ["a bakery owner who finds a body in the flour store", "a knitting circle with a secret", "a vicar's missing cat and a forged will",
      "a bookshop cat that sniffs out clues", "a poisoned pie at the harvest fair"], "cozy mystery",
     ["Great with a cup of tea", "My comfort read this winter", "Read it by the fireplace"]),
    ("noir", ["The Hardboiled Reader", "The Crime Scene Regular"],
     ["Wants gritty crime fiction with tough detectives, corruption and dark city streets.",
      "Reads hardboiled noir about police, gangs and moral grey zones."],
     ["a detective hunting a killer through rain-soaked docks", "a crooked cop on the mob's payroll",
      "a heist that goes wrong in the casino vault", "a witness hiding from the cartel", "a body found under the elevated train"],
     "crime noir",
     ["Devoured it on a long flight", "Read it in one sitting", "Bought it at the airport"]),
    ("regency", ["The Ballroom Romantic", "The Period Drama Devotee"],
     ["Swoons over historical romance with dukes, balls and courtship in Regency England.",
      "Enjoys period love stories full of etiquette, scandal and arranged marriages."],
     ["a duke who must marry before the season ends", "a governess and a brooding earl", "a scandal at the Almack's ball",
      "a wallflower who writes secret letters", "an heiress fleeing to Bath"], "historical romance",
     ["Read it in the bath", "A treat for my vacation", "Lazy afternoon in the garden"]),
    ("modern", ["The Second-Chance Believer", "The Small-Town Heart"],
     ["Loves contemporary romance: small towns, second chances and slow-burn love.",
      "Reads feel-good modern love stories with banter and happy endings."],
     ["a chef who returns to her hometown diner", "exes forced to plan the same wedding", "a single dad and the new vet in town",
      "a fake dating deal at a beach resort", "neighbours feuding over a shared garden"], "contemporary romance",
     ["Beach read of the summer", "Read it at the gym", "Listened to it while driving"]),
    ("war", ["The Military History Buff", "The Battlefield Scholar"],
     ["Studies military history: battles, generals and the strategy of the world wars.",
      "Prefers nonfiction about wartime campaigns and the soldiers who fought them."],
     ["the D-Day landings told by a paratrooper", "the siege of Leningrad", "a codebreaking unit at Bletchley Park",
      "a tank commander crossing North Africa", "the Pacific island-hopping campaign"], "military history",
     ["Borrowed it from my father", "Reread it for the third time", "Found it at the library sale"]),
    ("memoir", ["The Survivor Story Seeker", "The Empathetic Listener"],
     ["Moved by memoirs of hardship, escape and resilience told in the first person.",
      "Reads true personal stories of people who overcame poverty, illness or oppression."],
     ["a refugee's escape across three borders", "growing up in a family torn by addiction", "a nurse surviving a famine",
      "a childhood spent in a labor camp", "rebuilding a life after prison"], "memoir",
     ["Recommended by a friend", "Made me call my mother", "Read it during a hard year"]),
    ("habits", ["The Productivity Optimizer", "The Self-Improvement Planner"],
     ["Reads self-help about habits, focus and goal setting to improve daily routines.",
      "Wants practical advice on productivity, discipline and personal growth."],
     ["a five-step morning routine", "how tiny habits compound over a year", "a method for deep work without distraction",
      "journaling prompts for setting goals", "saying no to protect your time"], "self-help",
     ["Took notes on every chapter", "Highlighted half the pages", "Read a chapter each morning"]),
    ("food", ["The Home Baker", "The Kitchen Experimenter"],
     ["Collects cookbooks and food writing: recipes, baking projects and kitchen stories.",
      "Enjoys cooking books with seasonal recipes and tips from chefs."],
     ["sourdough loaves from a starter kept for decades", "one-pot dinners for busy weeknights", "a pastry chef's French desserts",
      "pickling the summer harvest", "street food recipes from Bangkok"], "cookbook",
     ["Kept it open on the counter", "Stained with sauce already", "Bought a copy for my sister"]),
]
ADJECTIVES = ["Silent", "Hollow", "Crimson", "Last", "Hidden", "Broken", "Golden", "Distant", "Quiet", "Burning",
              "Paper", "Winter", "Glass", "Iron", "Velvet", "Salt"]
NOUNS = ["Lantern", "Harbor", "Orchard", "Signal", "Bridge", "Compass", "Garden", "Archive", "River", "Tower",
         "Letter", "Map", "Mirror", "Road", "Season", "Key"]
QUALITY = ["pacing", "characters", "writing style", "depth", "originality", "clarity"]
GENERATOR_VERSION = 2  # bump when the generated content changes: `ensure` then rewrites old files


def _rows(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def generate(out_dir: str | Path, seed: int = 0, n_users: int = 300, n_items: int = 48, personas_per_item: int = 3,
             history_len: int = 3, on_theme: int = 1, test_fraction: float = 0.2, n_candidates: int = 20) -> dict[str, Path]:
    """Write the synthetic files into ``out_dir`` (each atomically) and return their paths by data.yaml key."""
    rng = random.Random(seed)
    out = Path(out_dir)
    k = len(ARCHETYPES)
    # items: theme archetype round-robin, so every theme has the same number of books
    titles = rng.sample([f"{a} {n}" for a in ADJECTIVES for n in NOUNS], n_items)
    items = []
    for i in range(n_items):
        theme = i % k
        cues = rng.sample(ARCHETYPES[theme][3], 2)
        others = rng.sample([a for a in range(k) if a != theme], personas_per_item - 1)
        arche = [theme] + others
        rng.shuffle(arche)
        items.append({"id": f"SB{i:04d}", "title": titles[i], "theme": theme, "archetypes": arche,
                      "summary": f"{titles[i]}: a book about {cues[0]} and {cues[1]}."})
    by_theme = {a: [it for it in items if it["theme"] == a] for a in range(k)}

    persona_rows, summary_rows = [], []
    for it in items:
        personas = []
        for j, a in enumerate(it["archetypes"]):
            key, names, descs, _cues, facet, _titles = ARCHETYPES[a]
            pid = f"P{j + 1}"
            personas.append({"ID": pid, "Name": rng.choice(names), "Description": rng.choice(descs),
                             "Preference_Rationale": f"Picks {it['title']} as a {facet} reader.",
                             "Item_Summary": it["summary"], "unique_persona_id": f"{it['id']}_{pid}"})
        it["personas"] = personas
        persona_rows.append({"item_id": it["id"], "personas": personas})
        summary_rows.append({"item_id": it["id"], "item_title": it["title"],
                             "item_description": f"A book titled {it['title']}.", "item_summary": it["summary"]})

    def review(user, a, it, ts):
        facet = ARCHETYPES[it["theme"]][4]
        extracted = {"category_preference": facet, "category_preference_reason": f"The reviewer enjoyed the {facet} story.",
                     "purchase_purpose": None, "purchase_purpose_reason": "Not stated.",
                     "quality_criteria": rng.choice(QUALITY), "quality_criteria_reason": "Mentioned in the review.",
                     "usage_context": None, "usage_context_reason": "Not stated."}
        return {"user_id": user, "item_id": it["id"], "review_title": rng.choice(ARCHETYPES[a][5]), "summary": it["summary"],
                "extracted": extracted, "timestamp": ts, "rating": float(rng.choice([3, 4, 4, 5, 5]))}

    loo, full, gt3, selected, heldout, cand, gt, meta_users = [], [], [], [], [], [], [], {}
    n_test = int(round(n_users * test_fraction))
    for u in range(n_users):
        user = f"SU{u:05d}"
        a = u % k
        split = "test" if u >= n_users - n_test else "train"
        target = rng.choice(by_theme[a])
        picks = rng.sample([it for it in by_theme[a] if it is not target], on_theme)
        picks += rng.sample([it for it in items if it["theme"] != a], history_len - on_theme)
        rng.shuffle(picks)
        t0 = 1_600_000_000_000 + u * 10_000_000
        reviews = [review(user, a, it, t0 + 86_400_000 * j) for j, it in enumerate(picks)]
        loo.append({"user_id": user, "reviews": reviews})
        full.append({"user_id": user, "reviews": reviews + [review(user, a, target, t0 + 86_400_000 * len(picks))]})
        gt3.append({"user_id": user, "item_id": target["id"]})
        persona = target["personas"][target["archetypes"].index(a)]
        line = {"user_id": user, "target_item_id": target["id"], "selected_persona_id": persona["ID"],
                "selected_persona_name": persona["Name"],
                "selected_persona": {x: persona[x] for x in ("ID", "Name", "Description", "Preference_Rationale")},
                "selection_reasoning": f"Planted: archetype {ARCHETYPES[a][0]}."}
        (heldout if split == "test" else selected).append(line)
        meta_users[user] = {"archetype": ARCHETYPES[a][0], "split": split, "target": target["id"],
                            "persona": persona["unique_persona_id"]}
        if split == "test":
            seen = {it["id"] for it in picks}
            negatives = rng.sample([it["id"] for it in items if it["id"] not in seen and it is not target],
                                   n_candidates - 1)
            ids = negatives + [target["id"]]
            rng.shuffle(ids)
            if u % 4 == 0:  # a placeholder slot, as upstream lists have
                ids[rng.choice([j for j, x in enumerate(ids) if x != target["id"]])] = "[PAD]"
            scores = sorted((rng.gauss(0, 1) for _ in ids), reverse=True)
            cand.append({"user_id": user, "topk": n_candidates, "filter_scope": "train_valid",
                         "results": [{"item_id": i, "score": s} for i, s in zip(ids, scores)]})
            gt.append({"user_id": user, "item_id": target["id"]})

    files = {"persona": "3.5_persona_with_summary.jsonl", "loo_history": "3.5_history_loo.jsonl",
             "history": "3.5_history.jsonl", "gt_loo": "3.5_gt.jsonl", "item_summary": "2_summary.jsonl",
             "selected": "4_selected_personas.jsonl", "heldout_selected": "heldout_selected_personas.jsonl",
             "candidates": "candidate.jsonl", "gt": "gt.jsonl"}
    content = {"persona": persona_rows, "loo_history": loo, "history": full, "gt_loo": gt3, "item_summary": summary_rows,
               "selected": selected, "heldout_selected": heldout, "candidates": cand, "gt": gt}
    paths = {}
    for key, name in files.items():
        paths[key] = out / name
        atomic_write_text(paths[key], _rows(content[key]))
    paths["meta"] = out / "meta.json"
    atomic_write_json(paths["meta"], {"version": GENERATOR_VERSION, "seed": seed, "archetypes": [a[0] for a in ARCHETYPES], "users": meta_users,
                                      "items": {it["id"]: {"theme": ARCHETYPES[it["theme"]][0],
                                                           "archetypes": [ARCHETYPES[a][0] for a in it["archetypes"]]}
                                                for it in items}})
    return paths


def ensure(data_files: dict[str, Path | None], log=print) -> None:
    """For ``generate: true`` configs: write the default files into the folder of ``persona`` when
    any configured file is missing (the folder must use the standard file names)."""
    from core.errors import DataError

    persona = data_files.get("persona")
    if persona is None:
        raise DataError("data config: generate: true needs 'persona' to say where the synthetic files go")
    wanted = {k: p for k, p in data_files.items() if p is not None}
    meta = persona.parent / "meta.json"
    try:  # files of an older generator are rewritten; a folder without meta.json is left as it is
        stale = meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("version") != GENERATOR_VERSION
    except (OSError, ValueError, AttributeError):
        stale = True
    if not stale and all(p.is_file() for p in wanted.values()):
        return
    log(f"generating the synthetic persona data in {persona.parent}")
    written = generate(persona.parent)
    missing = [f"{k}={p}" for k, p in wanted.items() if not p.is_file()]
    if missing:
        raise DataError(f"generate: true wrote {', '.join(p.name for p in written.values())} into {persona.parent}, "
                        f"but the config points elsewhere for {', '.join(missing)}; use those file names")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/persona_synthetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--items", type=int, default=48)
    args = parser.parse_args(argv)
    paths = generate(args.out, seed=args.seed, n_users=args.users, n_items=args.items)
    print(f"wrote {len(paths)} files to {args.out}")
    return 0


if __name__ == "__main__":
    run(main)

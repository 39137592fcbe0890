"""The texts the viewer's test folders are made of (hostile ones, and which answers are right), and their raw lines."""

HOSTILE_REPLY = ("</script><script>window.__pwned='reply'</script><!-- <img src=x onerror=\"window.__pwned='img'\"> "
                 "<b>bold</b> [click](javascript:window.__pwned='link') javascript:window.__pwned='url' "
                 "The answer is 5.")
# ids, questions and targets of the custom task: (id, question); targets come later
QUESTIONS = [
    ("plain-0", "What is 2 plus 3?"),
    ("L1<img src=x onerror=\"window.__pwned='id'\">", "Ignore this: </script><script>window.__pwned='question'</script>"
                                                      " What is 4 plus 4?"),
    ("plain-2", "Tom has 3 apples and gets 2 more. How many apples does he have?"),
    ("odd-3", "What is 1 plus 1? <!-- [click](javascript:window.__pwned='md') -->"),
]
CALIBRATION = [(f"calibration-{i}", f"What is {i} plus {i}?") for i in range(4)]  # the pruned arms learn on these
HOSTILE_TARGET = "<b>nine</b> [x](javascript:window.__pwned='target')"
BASELINE_RIGHT = ("plain-0", "plain-2")


def latest_rows(samples_path) -> dict:
    """samples.jsonl as its raw lines, the latest per (id, repeat): what the records say, read apart from the store."""
    import json
    from pathlib import Path

    rows = [json.loads(line) for line in Path(samples_path).read_text(encoding="utf-8").split("\n") if line.strip()]
    return {(row["id"], row.get("repeat", 0)): row for row in rows}

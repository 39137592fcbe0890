"""The texts the viewer's test folders are made of: hostile ones, and which answers are right."""

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

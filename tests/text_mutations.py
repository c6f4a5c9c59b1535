"""A hypothesis strategy shared by the parser fuzz tests: a text file with lines dropped,
duplicated, swapped, garbage lines inserted and values replaced."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def mutated_lines(draw: st.DrawFn, text: str, values: st.SearchStrategy[str],
                  garbage: st.SearchStrategy[str]) -> str:
    lines = text.split("\n")
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "garbage", "value"]))
        if op == "delete" and len(lines) > 1:
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(min_value=0, max_value=len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "garbage":
            lines.insert(i, draw(garbage))
        else:  # replace the value of a `key = value` line
            keyed = [k for k, line in enumerate(lines)
                     if "=" in line and not line.lstrip().startswith("#")]
            k = draw(st.sampled_from(keyed)) if keyed else i
            key = lines[k].split("=", 1)[0] if "=" in lines[k] else "x "
            lines[k] = f"{key}= {draw(values)}"
    return "\n".join(lines)

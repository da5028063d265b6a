"""The Markdown table every benchmark prints (pastes into docs as is)."""


def print_table(headers: list[str], rows: list[tuple]) -> None:
  """Prints `rows` under `headers`; floats with one decimal, right-aligned."""
  cells = [[f'{v:.1f}' if isinstance(v, float) else str(v) for v in row]
           for row in rows]
  widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
            for i, h in enumerate(headers)]
  print('| ' + ' | '.join(h.ljust(w) for h, w in zip(headers, widths)) + ' |')
  print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
  for row in cells:
    # The first column (a name) left-aligned, numbers right-aligned.
    print('| ' + ' | '.join(
        (c.ljust(w) if i == 0 else c.rjust(w))
        for i, (c, w) in enumerate(zip(row, widths))) + ' |')

"""Benchmarks behind ``shmenv bench``: they ship inside the package so that any install
(``pip install 'shmenv[bench]'``) can measure its own machine.

One module per benchmark: :mod:`throughput` (every contender on a real game),
:mod:`coordination` (a zero-cost game: what the main process pays per env-step),
:mod:`startup`, :mod:`layouts` (the memory-layout suite) and :mod:`profile_step` (where one
env-step's microseconds go). :mod:`nullgame` is the zero-cost game.
:mod:`harness` runs each measurement in a fresh subprocess and holds the one rounds loop
every suite uses; :mod:`report` holds the table model (rendered to the console and to
markdown for docs/) and draws plots.
"""

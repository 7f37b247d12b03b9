"""What the grades say about each pair-finding method, shown wherever its pairs are (the report,
the explorer). The figures come from `benchmarks/absorption_finders.py` on ground truth the
methods were not tuned on; docs/absorption_finders.md has the tables and the data used."""

GRADE_NOTES = {
    "partial": (
        "On ground truth it was not tuned on (docs/absorption_finders.md): on absorption "
        "planted in the default MiniLM SAE, precision 0.93-1.00 at recall 0.8 (planting seeds "
        "3-5, two trainings of the SAE); in the toy lab, precision 0.37-0.73 at recall 0.8 "
        "(means over seeds 4-9, TopK and Matryoshka SAEs, absorption of at least 5 % or 50 %; "
        "0.9 was the target); of the category score's (main, absorbing) "
        "latent pairs on MiniLM, none in its top 100. Read the list as candidates to check, not "
        "as found absorption."
    ),
    "original": (
        'Ranked by the original statistic ("never co-occur, similar effects"). On every ground '
        "truth the project has (toy lab, planted absorption, category score; "
        "docs/absorption_finders.md) it finds no true absorbing pair: absorption is partial, so "
        "absorbing pairs do co-occur and the co-occurrence gate removes them. Kept for comparison "
        "and to reproduce the original scripts."
    ),
}

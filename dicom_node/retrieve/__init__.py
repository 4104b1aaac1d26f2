"""Retrieval of a patient's prior study from the PACS (C-FIND, C-MOVE to the node itself).

:mod:`.qr` is the Query/Retrieve SCU (one association per call); :mod:`.prior` decides which
prior study to compare with, retrieves its series and selects its inputs with the same routing
rule as the follow-up.
"""

"""deepsim: DeePSiM (Dosovitskiy & Brox, NIPS 2016) reproduced in PyTorch.

Data flow: images (`data`) → comparator features (`comparators`, `nets.caffenet`) → generator
(`nets.generator`) → losses (`losses`) → the one loop (`loop`) → results (`evaluate`).
"""

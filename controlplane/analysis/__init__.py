"""What is valid on paper but wrong in practice: findings about the mesh's objects.

`analyze(inputs)` runs every check in `checks.CHECKS` over one consistent set of objects
(the Mesh built from them, plus each object as parsed) and returns findings, each with a
stable code (`findings.CODES`). Reads the model only; never moves any state forward.
"""

"""sds-tools: tooling around the sharded-dataset-operator that is not part of its runtime (operator, converter).

`exampledata` generates the Oxford-IIIT-Pet-shaped example dataset (the `sds-example-data` command); the
examples, the tests and the benchmarks use it. The operator and converter images do not contain this package.
"""

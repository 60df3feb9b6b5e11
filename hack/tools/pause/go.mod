// The pod sandbox ("pause") program for the local cluster: no dependencies.
module sharded-dataset-operator.invalid/tools/pause

go 1.24

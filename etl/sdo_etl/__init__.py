"""AIS ETL webservers for sharded-dataset-operator: a runner for named classes and the project's examples."""

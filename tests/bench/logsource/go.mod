module trainrun.dev/bench/logsource

go 1.22

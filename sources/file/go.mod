module github.com/disco-lb/disco/sources/file

go 1.26.0

require (
	github.com/disco-lb/disco/core v0.3.0
	github.com/fsnotify/fsnotify v1.10.1
	go.uber.org/goleak v1.3.0
	go.uber.org/zap v1.28.0
	go.yaml.in/yaml/v3 v3.0.5
)

require (
	go.uber.org/multierr v1.11.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

replace github.com/disco-lb/disco/core => ../../core

module github.com/disco-lb/disco/sources/dns

go 1.26.0

require (
	github.com/disco-lb/disco/core v0.3.0
	github.com/miekg/dns v1.1.73
	go.uber.org/goleak v1.3.0
	go.uber.org/zap v1.28.0
)

require (
	go.uber.org/multierr v1.11.0 // indirect
	golang.org/x/net v0.61.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)

replace github.com/disco-lb/disco/core => ../../core

// Command plugin-log-sink is a sink plugin: it logs every update it gets
// (through plugin.Logger, so the lines reach the host's logger).
package main

import (
	"context"

	"go.uber.org/zap"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/plugin"
)

func main() {
	log := plugin.Logger()
	plugin.ServeSink(core.SinkFunc(func(_ context.Context, u core.Update) error {
		var eps []string
		for e := range u.State.Endpoints.All() {
			eps = append(eps, e.HostPort())
		}
		log.Info("update", zap.Stringer("target", u.Target), zap.Uint64("seq", u.Seq),
			zap.Int("added", len(u.Added)), zap.Int("removed", len(u.Removed)), zap.Strings("endpoints", eps))
		return nil
	}))
}

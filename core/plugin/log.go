package plugin

import (
	"io"
	"log"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapHCLog is an hclog.Logger writing to zap: go-plugin logs through it,
// and so do the plugin's own log lines, which go-plugin parses from the
// plugin's stderr (hclog JSON) and passes on at their level.
type zapHCLog struct {
	z    *zap.Logger
	name string
	args []any
}

func newHCLog(z *zap.Logger) hclog.Logger { return &zapHCLog{z: z} }

func (l *zapHCLog) fields(args []any) []zap.Field {
	all := append(append([]any(nil), l.args...), args...)
	out := make([]zap.Field, 0, len(all)/2+1)
	for i := 0; i < len(all); i += 2 {
		key, ok := all[i].(string)
		if !ok || i+1 >= len(all) {
			out = append(out, zap.Any("arg", all[i]))
			i--
			continue
		}
		if key == "timestamp" {
			continue // the plugin's own time of a line go-plugin passes on: the host's line has its time
		}
		out = append(out, zap.Any(key, all[i+1]))
	}
	return out
}

func (l *zapHCLog) Log(level hclog.Level, msg string, args ...any) {
	var lvl zapcore.Level
	switch level {
	case hclog.Trace, hclog.Debug:
		lvl = zapcore.DebugLevel
	case hclog.Warn:
		lvl = zapcore.WarnLevel
	case hclog.Error:
		lvl = zapcore.ErrorLevel
	default:
		lvl = zapcore.InfoLevel
	}
	if ce := l.z.Check(lvl, msg); ce != nil {
		ce.Write(l.fields(args)...)
	}
}

func (l *zapHCLog) Trace(msg string, args ...any) { l.Log(hclog.Trace, msg, args...) }
func (l *zapHCLog) Debug(msg string, args ...any) { l.Log(hclog.Debug, msg, args...) }
func (l *zapHCLog) Info(msg string, args ...any)  { l.Log(hclog.Info, msg, args...) }
func (l *zapHCLog) Warn(msg string, args ...any)  { l.Log(hclog.Warn, msg, args...) }
func (l *zapHCLog) Error(msg string, args ...any) { l.Log(hclog.Error, msg, args...) }
func (l *zapHCLog) IsTrace() bool                 { return l.z.Core().Enabled(zapcore.DebugLevel) }
func (l *zapHCLog) IsDebug() bool                 { return l.z.Core().Enabled(zapcore.DebugLevel) }
func (l *zapHCLog) IsInfo() bool                  { return l.z.Core().Enabled(zapcore.InfoLevel) }
func (l *zapHCLog) IsWarn() bool                  { return l.z.Core().Enabled(zapcore.WarnLevel) }
func (l *zapHCLog) IsError() bool                 { return l.z.Core().Enabled(zapcore.ErrorLevel) }
func (l *zapHCLog) ImpliedArgs() []any            { return l.args }
func (l *zapHCLog) With(args ...any) hclog.Logger {
	return &zapHCLog{z: l.z, name: l.name, args: append(append([]any(nil), l.args...), args...)}
}
func (l *zapHCLog) Name() string { return l.name }
func (l *zapHCLog) Named(name string) hclog.Logger {
	return &zapHCLog{z: l.z.Named(name), name: l.name + "." + name, args: l.args}
}
func (l *zapHCLog) ResetNamed(name string) hclog.Logger {
	return &zapHCLog{z: l.z.Named(name), name: name, args: l.args}
}
func (l *zapHCLog) SetLevel(hclog.Level) {}
func (l *zapHCLog) GetLevel() hclog.Level {
	switch {
	case l.IsDebug():
		return hclog.Debug
	case l.IsInfo():
		return hclog.Info
	case l.IsWarn():
		return hclog.Warn
	}
	return hclog.Error
}
func (l *zapHCLog) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return zap.NewStdLog(l.z)
}
func (l *zapHCLog) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return zap.NewStdLog(l.z).Writer()
}

package core

import "go.uber.org/zap"

var nopLogger = zap.NewNop()

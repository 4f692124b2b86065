package engine

import "time"

// WithReadAttempt returns cfg with readAttempt (recover.go) set to d.
func WithReadAttempt(cfg Config, d time.Duration) Config {
	cfg.readAttempt = d
	return cfg
}

package engine

import "time"

// WithReadAttempt returns cfg with readAttempt (recover.go) set to d.
func WithReadAttempt(cfg Config, d time.Duration) Config {
	cfg.readAttempt = d
	return cfg
}

// WithoutRetake returns cfg whose engines do not take a partition afresh
// when its pull ends by itself (a consumer a test deleted stays deleted).
func WithoutRetake(cfg Config) Config {
	cfg.noRetake = true
	return cfg
}

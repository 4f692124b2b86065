// Package quarantine counts and logs the event-stream messages that a
// Turnstile component skips because no reader can use them
// (events.Unreadable: undecodable, or misaddressed).
//
// Guarantee: every component counts under one metric,
// turnstile_quarantined_messages_total{component, reason}, with reason
// from the closed set of events.ReasonOf, so one alert covers them all;
// and each message is logged with the same attributes everywhere.
package quarantine

package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/turnstile-dev/turnstile/events"
	"github.com/turnstile-dev/turnstile/status"
)

func (a *app) statusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the NATS servers, each stream's replicas, leader and lag, and each consumer's backlog",
		Long: `Show where Turnstile's data lives and how far behind each part is, read from
JetStream now (the NATS user role may read it): the NATS servers holding the
streams, each stream's replicas and leader and whether each other replica is
current, each durable consumer's backlog (pending, ack pending, redelivered,
open pulls), and who handles each partition of the commands: each engine
with the P it opened with, the container engine its serve provisions on
and the partitions it pulls (one whose P is not the command stream's is
named under attention, as are serves provisioning on different container
engines). Over the HTTP API it is
serve's GET /v1/cluster, which answers the same.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			rep, err := a.clusterStatus(ctx)
			if err != nil {
				return err
			}
			if a.structured() {
				return a.print(rep)
			}
			return a.printStatus(rep)
		},
	}
}

// clusterStatus asks the API when the CLI speaks HTTP, else reads
// JetStream itself.
func (a *app) clusterStatus(ctx context.Context) (status.Report, error) {
	hc, viaAPI, err := a.apiClient()
	if err != nil {
		return status.Report{}, err
	}
	if viaAPI {
		return hc.Cluster(ctx)
	}
	// Not openStore: a stream without a leader must not keep the report
	// of the others from being shown.
	nc, err := a.connectNATS(ctx)
	if err != nil {
		return status.Report{}, err
	}
	defer nc.Close()
	return status.Read(ctx, nc, events.NewNames(a.prefix))
}

// printStatus writes a report as three tables and the partitions.
func (a *app) printStatus(rep status.Report) error {
	t := newTable(a.out, "NODE", "CLUSTER", "VERSION", "JETSTREAM", "STATE", "LEADS")
	for _, n := range rep.Nodes {
		state := "online"
		if n.Offline {
			state = "OFFLINE"
		}
		if n.Connected {
			state += " (connected)"
		}
		t.row(n.Name, orDash(n.Cluster), orDash(n.Version), strconv.FormatBool(n.JetStream), state, orDash(strings.Join(n.Leads, ", ")))
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(a.out)
	t = newTable(a.out, "STREAM", "REPLICAS", "LEADER", "MESSAGES", "LAST SEQ", "OTHER REPLICAS")
	for _, s := range rep.Streams {
		if s.Error != "" {
			t.row(s.Name, "?", "NO ANSWER", "-", "-", s.Error)
			continue
		}
		var peers []string
		for _, p := range s.Peers {
			state := "current"
			switch {
			case p.Offline:
				state = "OFFLINE"
			case !p.Current:
				state = "behind"
			}
			peers = append(peers, fmt.Sprintf("%s %s lag %d", p.Name, state, p.Lag))
		}
		t.row(s.Name, strconv.Itoa(s.Replicas), orDash(s.Leader), strconv.FormatUint(s.Messages, 10),
			strconv.FormatUint(s.LastSeq, 10), orDash(strings.Join(peers, "; ")))
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(a.out)
	t = newTable(a.out, "CONSUMER", "STREAM", "LEADER", "PENDING", "ACK PENDING", "REDELIVERED", "PULLS")
	for _, s := range rep.Streams {
		for _, c := range s.Consumer {
			t.row(c.Name, s.Name, orDash(c.Leader), strconv.FormatUint(c.Pending, 10), strconv.Itoa(c.AckPending),
				strconv.Itoa(c.Redelivered), strconv.Itoa(c.WaitingPulls))
		}
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(a.out)
	t = newTable(a.out, "ENGINE", "ID", "SINCE", "P", "PROVISIONER", "PARTITIONS")
	for _, e := range rep.Engines {
		parts := make([]string, len(e.Partitions))
		for i, k := range e.Partitions {
			parts[i] = strconv.Itoa(k)
		}
		t.row(e.Name, e.ID, e.Since.Local().Format(time.RFC3339), engineP(e, rep.P), orDash(status.ShortProvisioner(e.Provisioner)),
			orDash(strings.Join(parts, ",")))
	}
	if err := t.flush(); err != nil {
		return err
	}
	var waiting []string
	for _, p := range rep.Partitions {
		if !slices.ContainsFunc(rep.Engines, func(e status.Engine) bool { return slices.Contains(e.Partitions, p.ID) }) {
			waiting = append(waiting, fmt.Sprintf("partition %d: %s", p.ID, p.Owner))
		}
	}
	fmt.Fprintf(a.out, "\n%d partitions (consumers %s-pNN on the command and system streams)\n", len(rep.Partitions), events.DefaultEngineDurable)
	for _, w := range waiting {
		fmt.Fprintln(a.out, "attention:", w)
	}
	if rep.PartitionsError != "" {
		fmt.Fprintln(a.out, "attention: partitions unknown:", rep.PartitionsError)
	}
	for _, l := range slices.Concat(rep.OtherP(), rep.OtherProvisioners(), rep.Lagging()) {
		fmt.Fprintln(a.out, "attention:", l)
	}
	return nil
}

// engineP is an engine's P column: "-" when its release announced none,
// and the stream's beside it when they differ.
func engineP(e status.Engine, streamP int) string {
	switch {
	case e.P == 0:
		return "-"
	case e.PMismatch:
		return fmt.Sprintf("%d (STREAM HAS %d)", e.P, streamP)
	}
	return strconv.Itoa(e.P)
}

package apiclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/turnstile-dev/turnstile/api"
)

// maxAuditLine bounds one line of GET /v1/audit's ndjson answer. The
// report is a single line listing every violation, so on a damaged stream
// it may run to several MB: it gets the room a plain answer gets
// (maxAnswer), so that the stream never fails where the report alone
// would not.
const maxAuditLine = maxAnswer

// AuditAllProgress is AuditAll with the replay's progress: serve streams
// it (GET /v1/audit as application/x-ndjson), and progress, when set, is
// called with the stream sequence reached and the last one, in the order
// serve sent them (seq never goes back). An error serve reports at the end
// of the stream is an *Error, as the plain answer's would be; a stream
// that ends without its report, or a line this client cannot read, is an
// error saying so. A serve that answers the plain report (one from before
// the stream) gives it without progress.
func (c *Client) AuditAllProgress(ctx context.Context, progress func(seq, last uint64)) (api.AuditReport, error) {
	resp, err := c.request(ctx, http.MethodGet, "/v1/audit", nil, http.Header{"Accept": {api.NDJSON}}, nil)
	if err != nil {
		return api.AuditReport{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return api.AuditReport{}, answerError(resp)
	}
	// The body's reads end with ctx too, not only the request.
	stop := context.AfterFunc(ctx, func() { _ = resp.Body.Close() })
	defer stop()
	var rep api.AuditReport
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != api.NDJSON {
		err := readAnswer(resp, http.MethodGet, "/v1/audit", &rep)
		return rep, err
	}
	rep, err = readAuditStream(resp.Body, maxAuditLine, progress)
	if err != nil && ctx.Err() != nil {
		return rep, ctx.Err()
	}
	return rep, err
}

// readAuditStream reads AuditLines of at most maxLine bytes from r, calling
// progress with each progress line, until the final line: the report, or
// the error as an *Error.
func readAuditStream(r io.Reader, maxLine int, progress func(seq, last uint64)) (api.AuditReport, error) {
	sc := bufio.NewScanner(r)
	// The bound is the larger of maxLine and the first buffer's size.
	sc.Buffer(make([]byte, 0, min(64<<10, maxLine)), maxLine)
	n := 0
	for sc.Scan() {
		n++
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var l api.AuditLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return api.AuditReport{}, fmt.Errorf("line %d of the audit stream is not what this CLI understands: %w", n, err)
		}
		switch {
		case l.Error != nil:
			status := l.Status
			if status < 400 || status > 599 {
				status = http.StatusInternalServerError // the line says it failed, whatever its status
			}
			raw, _ := json.Marshal(l.Error)
			return api.AuditReport{}, &Error{Status: status, Body: *l.Error, raw: raw}
		case l.Report != nil:
			return *l.Report, nil
		case l.Progress != nil:
			if progress != nil {
				progress(l.Progress.Seq, l.Progress.Last)
			}
		default:
			// A line a newer serve may send (none today): passed over, so
			// that this client keeps working with it.
		}
	}
	switch err := sc.Err(); {
	case errors.Is(err, bufio.ErrTooLong):
		return api.AuditReport{}, fmt.Errorf("line %d of the audit stream is longer than %d bytes: %w", n+1, maxLine, err)
	case err != nil:
		return api.AuditReport{}, fmt.Errorf("the audit stream was cut after %d line(s): %w", n, err)
	}
	return api.AuditReport{}, fmt.Errorf("the audit stream ended before its report, after %d line(s): serve stopped or the connection was cut; run the audit again", n)
}

// Package provisionertest is the contract suite every Provisioner passes.
//
// Guarantee: a backend that passes Run keeps the promises written in
// package provisioner's documentation — idempotence per (workspace,
// generation), adopt/replace/superseded, readiness before Provision returns,
// prompt and clean cancellation, "not found" as success for Stop and
// Delete, installation isolation, and exits and removals on Watch. Each
// test uses fresh random workspace and installation ids and deletes what
// it provisioned, so the suite can run beside other tests on a shared
// engine.
package provisionertest

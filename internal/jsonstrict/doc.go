// Package jsonstrict checks a JSON document against the Go type it is
// decoded into, for the two things encoding/json (v1) lets through
// silently: an object key given twice (the last one wins) and a key that
// names a struct field only when case is ignored ("Type" for "type").
//
// Guarantees:
//   - Check refuses every object, at any depth, that holds a key twice,
//     with a *Error naming the key and where it is.
//   - Check refuses a key that is not a field of the struct it lands in but
//     equals one under case folding, naming the field it resembles; keys
//     no field resembles are left to the decoder's DisallowUnknownFields.
//   - Check never panics and reads at most the document it is given;
//     a malformed document is an error, never a partial pass.
//
// Callers decode as before (syntax, types, unknown fields) and then call
// Check, so its refusals apply only to documents that are otherwise valid.
package jsonstrict

// Counts a run of the HTTP caching conformance suite by test kind.
//
//   node count.mjs <suite dir> <results.json> [--prerequisites]
//
// A test passes when its result is `true`. With `--prerequisites`, a test
// whose `depends_on` tests did not all pass is not counted (the suite's own
// view on cache-tests.fyi); without it, every test counts. Prints one line
// per kind, then the ids of the tests that failed. A test whose setup
// failed (the suite's 🔹: an earlier response was not what the test needs
// to go on) is counted apart, as cache-tests.fyi shows it.
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, resultsFile, flag] = process.argv.slice(2)
const honour = flag === '--prerequisites'
const { default: suites } = await import(pathToFileURL(path.join(suiteDir, 'tests', 'index.mjs')))
const results = JSON.parse(fs.readFileSync(resultsFile, 'utf8'))

const tests = new Map()
for (const suite of suites) for (const test of suite.tests) tests.set(test.id, test)

const passed = id => results[id] === true
const counted = test => !honour || (test.depends_on || []).every(passed)

const counts = { required: [0, 0, 0, 0], optimal: [0, 0, 0, 0] }
const failures = { required: [], optimal: [] }
for (const [id, test] of tests) {
  const kind = test.kind || 'required'
  if (!(kind in counts) || results[id] === undefined) continue
  if (!counted(test)) { counts[kind][2]++; continue }
  if (passed(id)) counts[kind][0]++
  else if (Array.isArray(results[id]) && results[id][0] === 'Setup') counts[kind][3]++
  else { counts[kind][1]++; failures[kind].push(id) }
}
for (const kind of ['required', 'optimal']) {
  const [pass, fail, skipped, setup] = counts[kind]
  console.log(`${kind}: ${pass} pass, ${fail} fail, ${setup} setup failed` +
    (honour ? `, ${skipped} not counted (a prerequisite failed)` : ''))
}
console.log(`required failures: ${failures.required.join(' ')}`)
console.log(`optimal failures: ${failures.optimal.join(' ')}`)

// Package methods defines what every fine-tuning method provides to the
// trainer, and a registry from method names to constructors that validates
// the architecture settings of a study (e.g. {rank: 32}).
//
// A method attaches to a T5 backbone through t5.Hooks: it adds its own
// tensors, changes the dataflow where it needs to, and names exactly the
// tensors the optimiser updates. Everything else stays frozen and, having
// no gradient, runs tape-free.
//
// # Adding a method
//
// A method is one file in baselines/ (or a package of its own, as read/)
// and one line in its package's Register, which methods/all calls:
//
//	r["ia3"] = methods.Entry{New: newIA3, Display: "IA³", Order: 7}
//
// The name is what a sweep file writes under methods:, Display its row in
// the tables, Order its place among the rows (the paper's methods take
// 0 to 6). That registry is the only list of methods: the sweep file's
// parser, the trainer, `sweep table` and the dashboard all read it.
//
// The constructor reads its architecture settings through Settings (Int,
// Float, Bool, Choice): a key it does not ask for is refused with the
// study's name, and so is a bad value. It returns a Method whose
// Trainable tensors are the only ones the optimiser updates; every other
// tensor of the backbone stays frozen and runs tape-free.
//
// # The seams
//
// A method changes the forward pass only through t5.Hooks:
//
//   - Linear sees every projection by name, the weight's without
//     ".weight": attention projections end in ".q", ".k", ".v" and ".o"
//     ("decoder.block.0.layer.1.EncDecAttention.k"), the feed-forward's in
//     ".wi" (".wi_0" and ".wi_1" when gated) and ".wo". A suffix test tells
//     them apart: ".o" is an attention output, ".wo" the feed-forward's.
//   - Norm sees every RMSNorm by name, SubLayer each self-attention and
//     feed-forward output before its residual add, Block each block's
//     output, InputEmbeds the encoder's embeddings, EncoderOutput and
//     DecoderOutput the stacks' final outputs.
//
// What a method sets decides how it trains and decodes:
//
//   - Hooks.EncoderUnchanged reports that no encoder seam is set (no
//     InputEmbeds, EncoderOutput, Linear, Norm, SubLayer or Block). Only
//     then does greedy decoding share one encoder pass across a method's
//     evaluations. A Linear or Norm hook counts as touching the encoder even
//     if it changes decoder names only, so such a method decodes with its
//     own encoder pass.
//   - StateTrainer (TrainsFromStates true) says the loss depends on the
//     frozen backbone only through its states (t5.Model.HeadLoss): the
//     trainer then trains from the state cache, and a sweep's pack: trains
//     several trials of the method over one backbone pass. READ's variant A
//     and LST are such methods. Any hook inside the backbone rules it out.
//   - Decayer and Dropouter opt into weight decay and the backbone's
//     dropout (full fine-tuning); DataInitializer into an initialisation
//     from training data (LST's pruning).
//
// # Tests to extend
//
// Add the method to the tables of:
//
//   - baselines.TestGradientsByFiniteDifferences: its trainable gradients
//     against central differences of the loss;
//   - baselines.TestSettingsValidation: its settings' errors;
//   - baselines.TestPaperParameterCounts: its size on t5-base's shapes;
//   - trial.TestEveryMethodTrains: a few epochs of the built-in trainer on
//     the tiny model, with its scores;
//   - the GPU tests (trial/gpu_test.go, t5/gpu_cgo_test.go), which run it on
//     the CPU emulator of the CUDA backend;
//   - methods/all.TestRegistry, for its name and row.
//
// A method peft also implements gets a golden test against peft's output
// (../shared/golden, copied into testdata/), as LoRA and prompt tuning have.
// Its weights are saved by Weights; the export in peft's layout comes with
// the models issue.
package methods

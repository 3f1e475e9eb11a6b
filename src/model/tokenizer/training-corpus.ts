/**
 * Text the generated test tokenizers learn their merges from. Written for this project; its only job is to give
 * the BPE trainer ordinary English words, numbers, punctuation, a little code and a little non-ASCII text.
 */
export const TRAINING_CORPUS = `
The lighthouse keeper climbed the stairs every evening at seven. There were one hundred and twelve steps,
and she counted them out loud, because counting kept her mind from wandering toward the mainland. At the top
she trimmed the wick, polished the lens, and wrote the weather into a thick green ledger: wind from the west,
light rain, visibility four miles. Nothing much changed from one week to the next, and that was the point.

In the spring a young engineer arrived on the supply boat. He carried two suitcases, a crate of batteries, and
a small grey box that he said would replace the lamp within a year. "It measures the fog," he explained, "and it
talks to the ships by radio. Nobody will need to climb those stairs again." The keeper listened politely and
offered him tea. She had heard similar promises before, from other people with other boxes.

The engineer worked in the storeroom for weeks. He tested circuits, replaced cables, and filled notebooks with
numbers: 3.14, 2.72, 1.41, 0.577, 299792458, 6.022e23. Some evenings he joined her at the top of the tower and
asked questions about the old machinery. How often did the clockwork need winding? Why was the lens divided
into rings? What happened when the power failed during a storm? She answered each question carefully, and he
wrote the answers down, and slowly the two of them began to understand that they were building the same thing.

By the autumn the grey box was blinking on a shelf beside the lamp. It sent short messages every minute, and the
ships answered with their names and positions. The keeper still climbed the stairs, but now she also read the
messages, and she noticed patterns the box could not see: a trawler that always ran late on Fridays, a ferry
that slowed down near the rocks even in calm water, a sailing boat that never reported at all.

Learning is mostly repetition. A child who reads the same story ten times notices new details on the eleventh
reading. A musician who practises a difficult passage slowly will one day play it quickly without thinking. A
model that predicts the next word in a sentence improves by seeing millions of sentences, making small errors,
and adjusting its weights a tiny amount after each one. The principle is simple; the scale is what is surprising.

Consider a recipe for bread. Mix five hundred grams of flour with ten grams of salt, seven grams of yeast, and
three hundred and fifty millilitres of warm water. Knead the dough for ten minutes until it is smooth and
elastic. Leave it to rise in a covered bowl for an hour, then shape it, let it rise again, and bake it at two
hundred and twenty degrees for thirty minutes. The crust should be golden and the loaf should sound hollow when
you tap the bottom. Good bread needs patience more than skill, and it rewards attention to small things.

Servers that answer many requests at once face a scheduling problem. Each request wants a share of the
processor, a share of the memory, and an answer as soon as possible. If the server handles requests one at a
time, the queue grows and people wait. If it handles too many together, each one slows down and memory runs
out. The best schedulers keep a steady batch, admit new work between steps, and release resources the moment a
request finishes or is cancelled. Fairness matters too: one busy tenant should not starve everyone else.

function add(a, b) {
  return a + b;
}

for (let i = 0; i < 10; i++) {
  console.log("step", i, add(i, i * 2));
}

const config = { hiddenSize: 64, numLayers: 2, numHeads: 4, maxTokens: 512 };
if (config.numHeads > 0 && config.hiddenSize % config.numHeads === 0) {
  print("head size is " + config.hiddenSize / config.numHeads);
}

Questions and answers:
Q: What is the capital of France? A: Paris.
Q: How many days are there in a week? A: Seven.
Q: What colour is the sky on a clear day? A: Blue.
Q: Which number comes after nineteen? A: Twenty.
Q: Who wrote the letter? A: The keeper wrote it, and the engineer delivered it.

The market opened at eight o'clock. Farmers carried baskets of apples, pears, plums, carrots, onions, potatoes,
and cabbages. A baker sold rolls and pastries from a wooden cart. Children chased each other between the stalls
while their parents argued cheerfully about prices. By noon the square was crowded, noisy, and warm, and the
smell of roasted chestnuts drifted from the corner where an old man turned them over a charcoal fire.

Rivers begin as small streams in the hills. Water gathers from rain and melting snow, runs downhill, joins other
streams, and grows wider and slower as it approaches the sea. Along the way it carries sand and stones, carves
valleys, feeds forests and fields, and gives towns a reason to exist. Most of the great cities of the world stand
beside a river or a harbour, because moving goods by water was once far easier than moving them over land.

Some words from other languages: café, naïve, résumé, Straße, smörgåsbord, piñata, déjà vu, Zürich, São Paulo,
Ελληνικά, русский, 日本語, 中文, 한국어. Some symbols: © ® ° ± × ÷ € £ ¥ — “quoted” ‘single’ … → ← ✓.

Time moves differently on an island. The days are measured by tides and boats rather than clocks. When the
weather turns bad, nothing arrives and nothing leaves, and people read, repair things, and tell old stories. When
the weather clears, everyone hurries to the harbour at once. The keeper liked both kinds of days. The engineer
preferred the busy ones at first, but by the end of the winter he had learned to enjoy the quiet ones as well.

Numbers in a table: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 16, 32, 64, 100, 128, 256, 512, 1000, 1024, 2048,
4096, 10000, 65536, 1000000. Dates: 2024-01-15, 1999-12-31, 2000-02-29. Times: 07:30, 12:00, 23:59.

Astronomers divide the sky into eighty-eight constellations. Some are bright and famous, such as Orion with its
belt of three stars, or the Plough, whose two pointer stars lead the eye toward the pole. Others are faint and
hard to find without a chart. On a moonless night far from any town, thousands of stars become visible, and the
pale band of the galaxy stretches across the whole sky like a thin cloud that never moves.

Gardening teaches humility. Seeds sprout when they are ready, not when the gardener wishes. Slugs, frost, drought,
and hungry birds all have opinions about the vegetables. Still, every summer there are tomatoes ripening against
a sunny wall, beans climbing their poles, lettuces crowding the beds, and strawberries hiding under their leaves.
The harvest is never exactly what was planned, yet it is usually enough, and sharing it is half the pleasure.

Before a bridge is built, engineers study the ground beneath it, the river's highest floods, the strongest winds,
and the heaviest lorries likely to cross. They calculate loads, choose materials, and test models in tunnels and
tanks. Steel bends; concrete cracks; cables stretch. A good design expects all of this and still stands firm for a
century. Inspectors visit regularly, tighten bolts, repaint girders, and replace worn bearings before they fail.

Memory in a computer is arranged in layers. Registers are tiny and instant; caches are small and quick; main
memory is large but slower; disks and networks are vast and slower still. Programs run fastest when the data they
need is already close at hand, so careful programmers arrange their work to reuse whatever was loaded most
recently. Measuring is better than guessing: a profiler often reveals that the slow part is somewhere unexpected.

Winter evenings on the island were long. The keeper knitted scarves, mended nets, baked ginger biscuits, and wrote
letters to her sister, who lived in a noisy city with trams, theatres, bookshops, museums, and crowded cafés. Her
sister wrote back describing concerts, exhibitions, quarrels with neighbours, and a cat named Pepper who refused to
sleep anywhere except on freshly ironed shirts. Each reply travelled twelve days by train, ferry, and rowing boat.

A good teacher rarely gives the answer straight away. Instead she asks a smaller question, waits, and lets the
student discover the next step. Mistakes become evidence rather than failures: why did this approach go wrong,
and what would happen if we tried the opposite? Over months, students stop asking whether they are right and start
asking how they could check. That habit outlasts every formula, vocabulary list, and examination timetable.

In the final chapter the lamp was switched off for the last time. The keeper did not feel sad. The light had
done its work for a hundred years, and the new system would do the same work in a different way. She kept the
green ledger, though, and every evening at seven she still wrote down the weather, because some habits are worth
keeping even after the reasons for them have gone.
`;
